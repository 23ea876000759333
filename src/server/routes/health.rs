//! Liveness and the API description.

use std::sync::OnceLock;

use axum::Json;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
}

/// Liveness: answers while the process serves HTTP. Needs no credentials.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

/// This API, described as OpenAPI 3, generated from the routes themselves.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "the OpenAPI document")))]
pub async fn openapi_json() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| super::super::openapi::document().to_pretty_json().unwrap_or_else(|_| "{}".into()));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], doc.as_str())
}
