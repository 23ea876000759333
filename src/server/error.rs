//! How an [`Error`] becomes an HTTP response, and the safety net that gives every other
//! failure (a rejection from the framework, an unknown route) the same JSON shape.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Kind, Problem};

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: match on this.
    pub code: String,
    /// For a person: what went wrong and what to do.
    pub message: String,
    /// Only when a request has several problems, each with its own code and position:
    /// the rules of a constitution that does not compile (`invalid_constitution`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Problem>>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message, errors: self.problems.map(|p| *p) } };
        let mut resp = (status, axum::Json(body)).into_response();
        match self.kind {
            Kind::RateLimited { retry_after_secs } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            Kind::Unauthenticated => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"countersign\""));
            }
            Kind::Unavailable => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

/// Unknown paths.
pub async fn route_not_found(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    let path: String = uri.path().chars().filter(|c| c.is_ascii_graphic()).take(200).collect();
    Error::new(
        Kind::NotFound,
        "route_not_found",
        format!("there is no route {method} {path}; the API is described at GET /v1/openapi.json"),
    )
}

/// Known paths, wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Error {
    let path: String = uri.path().chars().filter(|c| c.is_ascii_graphic()).take(200).collect();
    Error::new(
        Kind::MethodNotAllowed,
        "method_not_allowed",
        format!("{path} does not accept {method}; the API is described at GET /v1/openapi.json"),
    )
}

/// Middleware: any error response that is not already our JSON (a framework rejection,
/// a timeout, a caught panic) is rewritten into it, so clients only ever parse one shape.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let (kind, code) = match parts.status.as_u16() {
        // axum's words for a path segment that does not decode (`%FF`).
        400 if text.starts_with("Invalid URL") => {
            let mut out =
                Error::new(Kind::BadRequest, "invalid_path", "the path does not decode: a percent-encoded part of it is not UTF-8")
                    .into_response();
            *out.status_mut() = parts.status;
            return out;
        }
        400 => (Kind::BadRequest, "bad_request"),
        404 => (Kind::NotFound, "route_not_found"),
        405 => (Kind::MethodNotAllowed, "method_not_allowed"),
        413 => (Kind::PayloadTooLarge, "payload_too_large"),
        415 => (Kind::UnsupportedMediaType, "unsupported_media_type"),
        422 => (Kind::Unprocessable, "invalid_request"),
        408 => (Kind::RequestTimeout, "request_timeout"),
        503 => (Kind::Unavailable, "unavailable"),
        s if s < 500 => (Kind::BadRequest, "bad_request"),
        _ => (Kind::Internal, "internal_error"),
    };
    let message = if kind == Kind::Internal || text.trim().is_empty() {
        match kind {
            Kind::Internal => "something went wrong on our side; the request was not completed".to_string(),
            _ => parts.status.canonical_reason().unwrap_or("error").to_lowercase(),
        }
    } else {
        text.trim().chars().take(300).collect()
    };
    let mut out = Error::new(kind, code, message).into_response();
    // The status is kept (a 415 stays a 415), but a failure inside the server is a 503
    // like every other (see `error::Kind::Internal`).
    if kind != Kind::Internal {
        *out.status_mut() = parts.status;
    }
    out
}

/// Turns a caught panic into a 503 `internal_error` with our body, and logs it. (A panic
/// is a bug; the request it hit did not complete, and the store's transaction, if any,
/// rolled back.)
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let detail =
        err.downcast_ref::<String>().map(String::as_str).or_else(|| err.downcast_ref::<&str>().copied()).unwrap_or("unknown panic");
    tracing::error!(panic = detail, "request handler panicked");
    Error::internal("something went wrong on our side; the request was not completed").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(resp: Response<Body>) -> (u16, serde_json::Value) {
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_failure_inside_the_server_is_a_503_that_says_so_and_never_the_panic() {
        let (status, body) = body_of(panic_response(Box::new("index out of bounds: secret=hunter2".to_string()))).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body.to_string().contains("hunter2"), "a panic's text stays in the log: {body}");
        assert_eq!(Error::internal("x").status(), 503);
    }
}
