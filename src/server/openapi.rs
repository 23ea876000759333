//! The OpenAPI document: the base (title, security scheme, shared schemas) here; every
//! path comes from its handler's `#[utoipa::path]`, so the document cannot drift from
//! the routes.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::{ErrorBody, ErrorDetail};
use crate::error::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Countersign",
        description = "A governance gateway for AI-agent actions. Every error is `{\"error\": {\"code\", \"message\"}}`; match on `code`.",
    ),
    components(schemas(ErrorBody, ErrorDetail, Problem)),
    security(("bearer" = [])),
)]
struct Base;

/// The document's fixed parts.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A session token (`css_…`) from POST /v1/sessions, or an agent token (`csa_…`)."))
                .build(),
        ),
    );
    doc
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    super::routes::router().into_openapi()
}

#[cfg(test)]
mod patch_tests {
    /// A PATCH field is left out to keep it; `null` is refused (`extract::present`), and
    /// the document says so rather than call the fields nullable.
    #[test]
    fn patch_fields_are_not_nullable() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let ttl = &doc["components"]["schemas"]["SettingsPatch"]["properties"]["approval_ttl_seconds"];
        assert!(ttl.is_object(), "{ttl}");
        assert!(!ttl.to_string().contains("null"), "{ttl}");
        // As a field that may be null is written, for contrast.
        let reason = &doc["components"]["schemas"]["SubmitAction"]["properties"]["reason"];
        assert!(reason.to_string().contains("null"), "{reason}");
    }
}
