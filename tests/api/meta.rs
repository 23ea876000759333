//! Liveness and the API description.

use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_without_credentials() {
    let server = TestServer::start().await;
    let r = server.anon().get("/healthz").await;
    r.assert_status(200);
    assert_eq!(r.body["status"], "ok");
    assert_eq!(r.body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_openapi_3_and_describes_every_route_the_router_serves() {
    let server = TestServer::start().await;
    let r = server.anon().get("/v1/openapi.json").await;
    r.assert_status(200);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc: Value = serde_json::from_str(&r.text).expect("valid JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/healthz",
        "/v1/openapi.json",
        "/v1/sessions",
        "/v1/sessions/current",
        "/v1/me",
        "/v1/workspace",
        "/v1/workspace/transfer",
        "/v1/settings",
        "/v1/members",
        "/v1/members/{id}",
        "/v1/roles",
        "/v1/roles/{id}",
        "/v1/tokens",
        "/v1/tokens/{id}",
        "/v1/tokens/{id}/rotate",
        "/v1/audit",
        "/v1/audit/verify",
    ] {
        assert!(paths.contains_key(path), "{path} is not in the OpenAPI document");
    }
    // Every described operation is served: without credentials each answers from its own
    // handler (200, 401 or 400), never as an unknown route or a wrong method.
    let id = countersign::ids::new_id(countersign::ids::IdKind::User);
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys().filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str())) {
            let r = server.anon().send(method.to_uppercase().parse().unwrap(), &path.replace("{id}", &id), Some(b"{}".to_vec()), &[]).await;
            assert!(![404, 405].contains(&r.status), "{method} {path} is described but not served: {} {}", r.status, r.text);
            assert_ne!(r.status, 500, "{method} {path}: {}", r.text);
        }
    }
    // Every error response the document names uses the one error schema.
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // The same bytes each time: it is generated once from the code.
    assert_eq!(server.anon().get("/v1/openapi.json").await.text, r.text);
}
