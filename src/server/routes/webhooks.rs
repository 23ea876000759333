//! Webhooks: subscriptions to the audit log's events, signed per Standard Webhooks, and
//! their delivery log. Every route needs `webhooks:manage`, reading included: a
//! subscription's URL and filters say where the workspace's events go.

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Kind, Result};
use crate::ids::{self, IdKind};
use crate::server::AppState;
use crate::server::auth::{Auth, need};
use crate::server::error::ErrorBody;
use crate::server::extract::{self, Body, Query};
use crate::store::{NewWebhook, WebhookChange, WorkspaceId};
use crate::vault;
use crate::webhook::{self, Delivery, DeliveryStatus, Webhook};

/// How long a rotated-out secret keeps signing when the request does not say.
pub const DEFAULT_GRACE_SECONDS: i64 = 24 * 3600;
/// The longest grace period a rotation may ask for.
pub const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;
const MAX_DESCRIPTION: usize = 500;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// An `http://` or `https://` URL with a host and without credentials. Loopback and
    /// private addresses are allowed (receivers often run beside Countersign).
    pub url: String,
    /// Which events to deliver: exact types (`approval.requested`), families
    /// (`approval.*`), or `*` for all. 1 to 64 entries.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// Default `true`.
    pub enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub url: Option<String>,
    /// The whole new filter list (not a diff).
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub event_types: Option<Vec<String>>,
    /// Disabling gives up the outstanding deliveries; enabling clears `disabled_reason`.
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing deliveries, alongside the new one: 0 (stops
    /// at once) to 604800 (7 days). Default 86400 (24 hours).
    pub grace_seconds: Option<i64>,
}

/// A subscription with its signing secret: returned once, at creation or rotation.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WebhookWithSecret {
    /// `whsec_` and the base64 of 32 random bytes. Shown this once: store it now.
    pub secret: String,
    #[serde(flatten)]
    pub webhook: Webhook,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<Webhook>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only deliveries in this status: `pending`, `retrying`, `delivered` or `failed`.
    pub status: Option<String>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
    /// Only deliveries older than this one (`dlv_…`): pass the last id of a page for the next.
    pub before: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub items: Vec<Delivery>,
}

/// A JSON body that may be left out entirely (checked like [`Body`] when present).
pub struct OptionalBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(
                    Kind::PayloadTooLarge,
                    "payload_too_large",
                    format!("the request body is larger than the limit of {} bytes", extract::MAX_BODY_BYTES),
                )
            } else {
                Error::bad_request("unreadable_body", format!("the request body could not be read: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(None));
        }
        extract::parse_body(&bytes).map(|v| OptionalBody(Some(v)))
    }
}

fn check_url(url: &str) -> Result<String> {
    webhook::check_url(url).map_err(|m| Error::unprocessable("invalid_url", m))
}

/// Validates filters; returns them sorted without duplicates.
fn check_event_types(types: &[String]) -> Result<Vec<String>> {
    if types.is_empty() {
        return Err(Error::unprocessable(
            "invalid_event_types",
            "event_types needs at least one entry: an event type such as `approval.requested`, a family such as `approval.*`, or `*`",
        ));
    }
    if types.len() > webhook::MAX_FILTERS {
        return Err(Error::unprocessable("invalid_event_types", format!("event_types has at most {} entries", webhook::MAX_FILTERS)));
    }
    if let Some(bad) = types.iter().find(|t| !webhook::valid_filter(t)) {
        let shown: String = bad.chars().filter(|c| !c.is_control()).take(80).collect();
        return Err(Error::unprocessable(
            "invalid_event_types",
            format!(
                "`{shown}` is not an event type filter; use a type such as `approval.requested`, a family such as `approval.*`, or `*`"
            ),
        ));
    }
    // Well formed, but naming no event this server writes: a subscription that would
    // never fire.
    let unknown = |t: &String| {
        t != "*"
            && match t.strip_suffix(".*") {
                Some(family) => !crate::audit::is_event_family(family),
                None => !crate::audit::EVENT_TYPES.contains(&t.as_str()),
            }
    };
    if let Some(bad) = types.iter().find(|t| unknown(t)) {
        return Err(Error::unprocessable(
            "invalid_event_types",
            format!("`{bad}` names no event Countersign writes (docs/API.md lists them); a family is written like `approval.*`"),
        ));
    }
    let mut out = types.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_description(d: &str) -> Result<()> {
    if !crate::names::valid_free_text(d, MAX_DESCRIPTION, true) {
        return Err(Error::unprocessable(
            "invalid_description",
            format!(
                "a description is at most {MAX_DESCRIPTION} characters, without control characters (line breaks and tabs aside) or bidirectional controls"
            ),
        ));
    }
    Ok(())
}

/// A fresh secret, and its sealed form for the store.
fn new_secret(state: &AppState, ws: &WorkspaceId, webhook_id: &str) -> Result<(String, String)> {
    let secret = webhook::generate_secret();
    let sealed = state
        .keys
        .seal(&secret, &vault::webhook_secret_aad(ws.as_str(), webhook_id))
        .map_err(|e| Error::unavailable("master_key_unavailable", format!("a webhook secret cannot be stored: {e}")))?;
    Ok((secret, sealed))
}

/// Creates a subscription. Its signing secret is in the answer, once.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook, responses(
    (status = 201, body = WebhookWithSecret),
    (status = 403, body = ErrorBody),
    (status = 409, description = "the workspace has the most webhooks it may have", body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Auth<need::WebhooksManage>,
    Body(req): Body<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookWithSecret>)> {
    let url = check_url(&req.url)?;
    let event_types = check_event_types(&req.event_types)?;
    let description = req.description.unwrap_or_default();
    check_description(&description)?;
    let id = ids::new_id(IdKind::Webhook);
    let (secret, sealed_secret) = new_secret(&state, &caller.workspace, &id)?;
    let new = NewWebhook { id, url, description, event_types, enabled: req.enabled.unwrap_or(true), sealed_secret };
    let webhook = state.store.create_webhook(&caller.workspace, &caller.origin(), new).await?;
    Ok((StatusCode::CREATED, Json(WebhookWithSecret { secret, webhook })))
}

/// Every subscription (never a secret).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, body = WebhookList), (status = 403, body = ErrorBody)))]
pub async fn list_webhooks(State(state): State<AppState>, caller: Auth<need::WebhooksManage>) -> Result<Json<WebhookList>> {
    Ok(Json(WebhookList { items: state.store.list_webhooks(&caller.workspace).await? }))
}

/// One subscription (never its secret).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "webhook id (`whk_…`)")), responses(
    (status = 200, body = Webhook),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Auth<need::WebhooksManage>,
    Path(id): Path<String>,
) -> Result<Json<Webhook>> {
    ids::parse(IdKind::Webhook, &id)?;
    Ok(Json(state.store.get_webhook(&caller.workspace, &id).await?))
}

/// Changes a subscription's URL, filters, description or whether it is enabled.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook, params(("id" = String, Path, description = "webhook id")), responses(
    (status = 200, body = Webhook),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn update_webhook(
    State(state): State<AppState>,
    caller: Auth<need::WebhooksManage>,
    Path(id): Path<String>,
    Body(req): Body<UpdateWebhook>,
) -> Result<Json<Webhook>> {
    ids::parse(IdKind::Webhook, &id)?;
    let change = WebhookChange {
        url: req.url.as_deref().map(check_url).transpose()?,
        event_types: req.event_types.as_deref().map(check_event_types).transpose()?,
        description: match req.description {
            Some(d) => {
                check_description(&d)?;
                Some(d)
            }
            None => None,
        },
        enabled: req.enabled,
    };
    Ok(Json(state.store.update_webhook(&caller.workspace, &caller.origin(), &id, change).await?))
}

/// Deletes a subscription and its delivery log. Nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "webhook id")), responses(
    (status = 200, description = "the deleted subscription", body = Webhook),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Auth<need::WebhooksManage>,
    Path(id): Path<String>,
) -> Result<Json<Webhook>> {
    ids::parse(IdKind::Webhook, &id)?;
    Ok(Json(state.store.delete_webhook(&caller.workspace, &caller.origin(), &id).await?))
}

/// Replaces the signing secret; the new one is in the answer, once. The old one keeps
/// signing (both signatures are sent) for `grace_seconds`, so receivers can switch
/// without missing a delivery. The body may be left out.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", request_body(content = Option<RotateSecret>, description = "optional"), params(("id" = String, Path, description = "webhook id")), responses(
    (status = 200, body = WebhookWithSecret),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Auth<need::WebhooksManage>,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<RotateSecret>,
) -> Result<Json<WebhookWithSecret>> {
    ids::parse(IdKind::Webhook, &id)?;
    let grace = req.unwrap_or_default().grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
        return Err(Error::unprocessable("invalid_grace", format!("grace_seconds must be between 0 and {MAX_GRACE_SECONDS} (7 days)")));
    }
    let (secret, sealed) = new_secret(&state, &caller.workspace, &id)?;
    let webhook = state.store.rotate_webhook_secret(&caller.workspace, &caller.origin(), &id, sealed, grace).await?;
    Ok(Json(WebhookWithSecret { secret, webhook }))
}

/// A subscription's delivery log, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path, description = "webhook id"), DeliveryQuery), responses(
    (status = 200, body = DeliveryList),
    (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Auth<need::WebhooksManage>,
    Path(id): Path<String>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryList>> {
    ids::parse(IdKind::Webhook, &id)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            let shown: String = s.chars().filter(|c| c.is_ascii_graphic()).take(40).collect();
            Error::bad_request("invalid_query", format!("`{shown}` is not a delivery status: pending, retrying, delivered or failed"))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=crate::store::MAX_DELIVERY_PAGE).contains(&limit) {
        return Err(Error::bad_request("invalid_query", format!("limit must be between 1 and {}", crate::store::MAX_DELIVERY_PAGE)));
    }
    if let Some(b) = &q.before {
        ids::parse(IdKind::Delivery, b)?;
    }
    Ok(Json(DeliveryList { items: state.store.list_deliveries(&caller.workspace, &id, status, q.before, limit).await? }))
}

/// Queues a fresh attempt of a delivery now (the same `webhook-id`), restarting its
/// retry schedule: for a receiver that lost or mishandled it.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "webhooks", params(
    ("id" = String, Path, description = "webhook id"),
    ("delivery_id" = String, Path, description = "delivery id (`dlv_…`)"),
), responses(
    (status = 202, description = "queued", body = Delivery),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, description = "the webhook is disabled, or an attempt is in flight", body = ErrorBody),
))]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Auth<need::WebhooksManage>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Delivery>)> {
    ids::parse(IdKind::Webhook, &id)?;
    ids::parse(IdKind::Delivery, &delivery_id)?;
    let delivery = state.store.redeliver(&caller.workspace, &caller.origin(), &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}
