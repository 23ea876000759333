//! Bad input: each kind gets the one JSON error shape with a stable code and the right
//! status, never a 500, and never a half-written record.

use serde_json::json;

use countersign::server::ServerConfig;

use crate::support::*;

/// A workspace whose owner sends bad bodies to POST /v1/members (a write that would add
/// a member and an audit event), and checks afterwards that neither happened.
struct Probe {
    _server: TestServer,
    ws: Workspace,
    members: usize,
    events: usize,
}

impl Probe {
    async fn new() -> Probe {
        let server = TestServer::start().await;
        let ws = server.workspace("bad").await;
        let members = ws.owner.get("/v1/members").await.body["items"].as_array().unwrap().len();
        let events = ws.owner.all_events().await.len();
        Probe { _server: server, ws, members, events }
    }

    async fn send(&self, body: &[u8]) -> Resp {
        self.ws.owner.raw("POST", "/v1/members", body).await
    }

    /// Nothing was written.
    async fn unchanged(&self) {
        assert_eq!(self.ws.owner.get("/v1/members").await.body["items"].as_array().unwrap().len(), self.members, "a member was added");
        assert_eq!(self.ws.owner.all_events().await.len(), self.events, "an event was written");
    }
}

fn member_json(extra: &str) -> Vec<u8> {
    format!(r#"{{"email": "new@bad.test", "password": "{PASSWORD}", "role": "viewer"{extra}}}"#).into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400() {
    let p = Probe::new().await;
    for body in [&b"{\"email\": "[..], b"{'email': 'x'}", b"not json", b"{\"email\": \"a@b.c\",}", b"{} {}", b"[1, 2"] {
        p.send(body).await.assert_error(400, "malformed_json");
    }
    // A wrongly typed field early on does not hide that the body is broken later.
    p.send(br#"{"email": 5, "password": "#).await.assert_error(400, "malformed_json");
    p.send(&[member_json(""), b"garbage".to_vec()].concat()).await.assert_error(400, "malformed_json");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_types_are_422_naming_the_field() {
    let p = Probe::new().await;
    let r = p.send(br#"{"email": 5, "password": "correct horse battery staple", "role": "viewer"}"#).await;
    r.assert_error(422, "invalid_field");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("email"), "{}", r.text);
    p.send(br#"{"email": "a@bad.test", "password": ["x"], "role": "viewer"}"#).await.assert_error(422, "invalid_field");
    p.send(br#"["email", "password"]"#).await.assert_error(422, "invalid_field");
    p.send(br#""just a string""#).await.assert_error(422, "invalid_field");
    p.send(br#"{"email": "a@bad.test", "role": "viewer"}"#).await.assert_error(422, "invalid_field");
    // A value of the wrong type where one of a set of names belongs is valid JSON:
    // a field's error naming the field, never `malformed_json`.
    for role in ["null", "1", "true", "[\"viewer\"]"] {
        let body = format!(r#"{{"kind": {role}, "irreversible": false, "policy": "approve", "connector": {{"type": "record"}}}}"#);
        let r = p.ws.owner.raw("PUT", "/v1/tools/email.send", body.as_bytes()).await;
        r.assert_error(422, "invalid_field");
        assert!(r.body["error"]["message"].as_str().unwrap().starts_with("kind: "), "{}", r.text);
    }
    // Types are named as JSON names them, not as Rust does.
    let tool =
        json!({"kind": "write", "irreversible": false, "policy": "approve", "min_confidence": "high", "connector": {"type": "record"}});
    let r = p.ws.owner.put("/v1/tools/email.send", tool).await;
    r.assert_error(422, "invalid_field");
    assert!(r.text.contains("expected a number") && !r.text.contains("f64"), "{}", r.text);
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_array_is_never_taken_for_an_object_field_by_field() {
    let p = Probe::new().await;
    // serde would read a struct from an array, in field order: a member, made from this.
    let r = p.send(format!(r#"["new@bad.test", "{PASSWORD}", "viewer"]"#).as_bytes()).await;
    r.assert_error(422, "invalid_field");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("JSON object"), "{}", r.text);
    let kill = p.ws.owner.put("/v1/killswitches/workspace", json!([true, "by position"])).await;
    kill.assert_error(422, "invalid_field");
    assert_eq!(p.ws.owner.get("/v1/killswitches").await.body["workspace"]["engaged"], false, "the switch was engaged");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_sent_in_the_wrong_place_is_not_repeated_in_the_error() {
    let p = Probe::new().await;
    // A secret pasted as a string where a map belongs: the message says what kind of value
    // it was, never the value (messages are shown and logged).
    let tool = json!({"kind": "write", "irreversible": false, "policy": "auto",
        "connector": {"type": "http", "url": "https://example.com/hook", "secret_headers": "Authorization: Bearer sk_live_LEAKME"}});
    let r = p.ws.owner.put("/v1/tools/email.send", tool).await;
    r.assert_error(422, "invalid_field");
    assert!(!r.text.contains("LEAKME"), "{}", r.text);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("a string"), "{}", r.text);
    // A string where an enum belongs, and where a number belongs (with escaped quotes).
    let tool = json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {"type": "Bearer sk_live_LEAKME"}});
    let r = p.ws.owner.put("/v1/tools/email.send", tool).await;
    r.assert_error(422, "invalid_field");
    assert!(!r.text.contains("LEAKME"), "{}", r.text);
    let tool = json!({"kind": "write", "irreversible": false, "policy": "auto", "approval_ttl_seconds": "a \"quoted\" sk_live_LEAKME", "connector": {"type": "record"}});
    let r = p.ws.owner.put("/v1/tools/email.send", tool).await;
    r.assert_error(422, "invalid_field");
    assert!(!r.text.contains("LEAKME") && r.text.contains("approval_ttl_seconds"), "{}", r.text);
    // Nor a number or a boolean: a card number pasted where a password belongs.
    let r = p.send(br#"{"email": "n@bad.test", "password": 4111111111111111, "role": "viewer"}"#).await;
    r.assert_error(422, "invalid_field");
    assert!(!r.text.contains("4111111111111111") && r.text.contains("a whole number"), "{}", r.text);
    // A `record` connector takes nothing but its type.
    let record =
        json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {"type": "record", "url": "https://example.com"}});
    p.ws.owner.put("/v1/tools/email.send", record).await.assert_error(422, "invalid_field");
    p.ws.owner.get("/v1/tools/email.send").await.assert_error(404, "not_found");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_fields_are_422() {
    let p = Probe::new().await;
    let r = p.send(&member_json(r#", "is_owner": true"#)).await;
    r.assert_error(422, "invalid_field");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("is_owner"), "{}", r.text);
    p.ws.owner.patch("/v1/settings", json!({"agent_writes": true})).await.assert_error(422, "invalid_field");
    p.unchanged().await;
    assert_eq!(p.ws.owner.get("/v1/settings").await.body["agent_writes_enabled"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_body_is_400() {
    let p = Probe::new().await;
    p.send(b"").await.assert_error(400, "empty_body");
    p.send(b"  \n\t ").await.assert_error(400, "empty_body");
    p.ws.owner.post_empty("/v1/members").await.assert_error(400, "empty_body");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_one_mebibyte_is_413() {
    let p = Probe::new().await;
    // Valid JSON, just too big: a name field padded past the limit.
    let pad = "x".repeat(1024 * 1024);
    p.send(&member_json(&format!(r#", "name": "{pad}""#))).await.assert_error(413, "payload_too_large");
    // Just under the limit is read (and refused for what it says, not its size).
    let under = member_json(&format!(r#", "name": "{}""#, "x".repeat(1024 * 1024 - 200)));
    assert!(under.len() < 1024 * 1024);
    p.send(&under).await.assert_error(422, "invalid_name");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_nesting_is_400() {
    let p = Probe::new().await;
    for depth in [65, 200, 100_000] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        p.send(&member_json(&format!(r#", "name": {deep}"#))).await.assert_error(400, "nesting_too_deep");
    }
    // Unclosed, too: refused for its depth, without recursing.
    p.send("[".repeat(200_000).as_bytes()).await.assert_error(400, "nesting_too_deep");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_is_400() {
    let p = Probe::new().await;
    let mut body = member_json("");
    let at = body.iter().position(|b| *b == b'@').unwrap();
    body[at - 1] = 0xff;
    p.send(&body).await.assert_error(400, "invalid_utf8");
    p.send(b"{\"email\": \"\xc3\x28@bad.test\"}").await.assert_error(400, "invalid_utf8");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unrepresentable_numbers_are_422() {
    let p = Probe::new().await;
    for n in ["1e400", "-1e400", "123456789012345678901234567890"] {
        let r = p.ws.owner.raw("PATCH", "/v1/settings", format!(r#"{{"approval_ttl_seconds": {n}}}"#).as_bytes()).await;
        r.assert_error(422, "unrepresentable_number");
        p.send(&member_json(&format!(r#", "name": {n}"#))).await.assert_error(422, "unrepresentable_number");
    }
    assert_eq!(p.ws.owner.get("/v1/settings").await.body["approval_ttl_seconds"], 1800);
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn null_in_a_patch_is_refused_not_taken_for_left_out() {
    let p = Probe::new().await;
    let r = p.ws.owner.patch("/v1/settings", json!({"approval_ttl_seconds": null})).await;
    r.assert_error(422, "invalid_field");
    assert!(r.text.contains("approval_ttl_seconds") && r.text.contains("leave the field out"), "{}", r.text);
    p.ws.owner.patch(&format!("/v1/members/{}", p.ws.owner_id), json!({"role": null})).await.assert_error(422, "invalid_field");
    // Left out is still "keep it".
    assert_eq!(p.ws.owner.patch("/v1/settings", json!({"agent_writes_enabled": true})).await.body["approval_ttl_seconds"], 1800);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ids_are_400() {
    let p = Probe::new().await;
    for path in
        ["/v1/members/42", "/v1/members/tok_01J0000000000000000000000", "/v1/roles/usr_x", "/v1/tokens/%00", "/v1/tokens/rol_/rotate"]
    {
        let method = if path.ends_with("rotate") { "POST" } else { "GET" };
        p.ws.owner.send(method.parse().unwrap(), path, None, &[]).await.assert_error(400, "invalid_id");
    }
    // Only the spelling Countersign writes is an id: not lower case, not past a ULID's range.
    let own = p.ws.owner_id.clone();
    for id in [own.to_lowercase(), format!("usr_8{}", &own[5..])] {
        p.ws.owner.get(&format!("/v1/members/{id}")).await.assert_error(400, "invalid_id");
    }
    // An id that is not even UTF-8 once decoded is refused by the framework's path
    // extractor before our id check runs: still a 400 in our shape, with a code that says so.
    p.ws.owner.get("/v1/roles/%FF%FE").await.assert_error(400, "invalid_path");
    // A tool name no tool can have is named as such, as on PUT.
    p.ws.owner.get("/v1/tools/X.A").await.assert_error(422, "invalid_tool_name");
    p.ws.owner.get("/v1/tokens?owner=nobody").await.assert_error(400, "invalid_id");
    p.ws.owner.post("/v1/workspace/transfer", json!({"member_id": "usr_"})).await.assert_error(400, "invalid_id");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_query_strings_are_400() {
    let p = Probe::new().await;
    for q in ["limit=0", "limit=1001", "limit=ten", "after_seq=-1", "colour=red"] {
        p.ws.owner.get(&format!("/v1/audit?{q}")).await.assert_error(400, "invalid_query");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let p = Probe::new().await;
    let anon = p.ws.owner.anon();
    for api in [&p.ws.owner, &anon] {
        for path in ["/v1/nope", "/nope", "/v1/members/usr_01J0000000000000000000000A/extra", "/v2/members", "/"] {
            api.get(path).await.assert_error(404, "route_not_found");
        }
    }
    for (method, path) in
        [("PUT", "/v1/members"), ("DELETE", "/v1/audit"), ("POST", "/healthz"), ("PATCH", "/v1/tokens"), ("PUT", "/v1/sessions")]
    {
        let r = p.ws.owner.send(method.parse().unwrap(), path, Some(b"{}".to_vec()), &[]).await;
        r.assert_error(405, "method_not_allowed");
    }
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_comes_before_the_body() {
    let p = Probe::new().await;
    // A caller without credentials learns nothing about what the body would have done.
    let anon = p.ws.owner.anon();
    anon.raw("POST", "/v1/members", b"{not json").await.assert_error(401, "missing_credentials");
    anon.raw("POST", "/v1/members", &member_json("")).await.assert_error(401, "missing_credentials");
    p.unchanged().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_given_twice_is_refused_not_collapsed() {
    let p = Probe::new().await;
    p.ws.record_tool("email.send", "write", "auto", false).await;
    let before = p.ws.owner.all_events().await.len();
    // Which `to` would the hash, the approver and the receiver each have seen?
    let body = br#"{"tool": "email.send", "payload": {"to": "ops@example.com", "to": "attacker@example.com"}}"#;
    let r = p.ws.owner.raw("POST", "/v1/actions", body).await;
    r.assert_error(422, "duplicate_name");
    assert!(r.body["error"]["message"].as_str().unwrap().contains(r#""to" appears twice"#), "{}", r.text);
    assert_eq!(p.ws.owner.all_events().await.len(), before, "nothing was recorded");
}

/// Reads from `s` until `want` has arrived or the peer closes, for at most 10 s.
async fn read_until(s: &mut tokio::net::TcpStream, want: Option<&str>) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if want.is_some_and(|w| String::from_utf8_lossy(&got).contains(w)) {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read).await.expect("the server answered or closed within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_too_slow_to_send_its_request_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let quick = std::time::Duration::from_millis(500);
    let server =
        TestServer::start_with(ServerConfig { header_read_timeout: quick, body_read_timeout: quick, ..ServerConfig::default() }).await;
    let ws = server.workspace("slow").await;
    let addr = server.base.trim_start_matches("http://").to_string();

    // Headers begun and never finished: the connection is closed, not held open. So is
    // one that never sends a byte, and one that opens as HTTP/2 (not spoken here).
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /v1/members HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    read_until(&mut s, None).await;
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    read_until(&mut silent, None).await;
    let mut h2 = tokio::net::TcpStream::connect(&addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    read_until(&mut h2, None).await;

    // A body that never arrives whole: 408 in the usual error shape, and nothing written.
    let members = ws.owner.get("/v1/members").await.body["items"].as_array().unwrap().len();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/members HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"email\"",
        ws.owner.token.as_deref().unwrap()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until(&mut s, Some("request_timeout")).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert_eq!(ws.owner.get("/v1/members").await.body["items"].as_array().unwrap().len(), members);

    // A compressed body is named as such, not called malformed JSON.
    let r = ws.owner.send(reqwest::Method::POST, "/v1/members", Some(b"\x1f\x8b\x08".to_vec()), &[("content-encoding", "gzip")]).await;
    r.assert_error(415, "unsupported_content_encoding");
}

#[tokio::test(flavor = "multi_thread")]
async fn small_mistakes_in_an_action_are_each_named() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("files.share", "read", "approve", false).await;
    // Bidirectional controls could show an approver another text than was sent.
    let spoof = json!({"tool": "files.share", "payload": {"f": "x"}, "reason": "share invoice\u{202E}fdp.exe"});
    ws.owner.post("/v1/actions", spoof).await.assert_error(422, "invalid_reason");
    let spoof = json!({"tool": "files.share", "payload": {"f": "x"}, "resource": "file:\u{2066}a"});
    ws.owner.post("/v1/actions", spoof).await.assert_error(422, "invalid_resource");
    // One Idempotency-Key, not two.
    let body = serde_json::to_vec(&json!({"tool": "files.share", "payload": {"f": "x"}})).unwrap();
    let r = ws.owner.send(reqwest::Method::POST, "/v1/actions", Some(body), &[("idempotency-key", "a"), ("idempotency-key", "b")]).await;
    r.assert_error(400, "invalid_idempotency_key");
    // A dry run's refusal names both permissions that would allow it.
    let (_, token) = Workspace::token(&ws.owner, &["tools:read"], &["*"]).await;
    let r = ws.owner.as_token(&token).post("/v1/actions", json!({"tool": "files.share", "payload": {}, "dry_run": true})).await;
    r.assert_error(403, "permission_denied");
    assert!(r.text.contains("actions:simulate") && r.text.contains("actions:submit"), "{}", r.text);
    // None of it was recorded.
    assert_eq!(ws.owner.get("/v1/actions").await.body["items"], json!([]));
    // An error names its request by an id of the server's, never one the client chose.
    let r = ws.owner.send(reqwest::Method::GET, "/v1/tools/X", None, &[("x-request-id", "client-chosen")]).await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert!(id.starts_with("req_") && countersign::ids::is_valid(countersign::ids::IdKind::Request, id), "{id}");
}
