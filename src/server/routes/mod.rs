//! The routes, one file per resource. Each handler names its permission in its
//! signature (`Auth<need::…>`) and its contract in `#[utoipa::path]`, from which
//! `GET /v1/openapi.json` is generated.

pub mod actions;
pub mod approvals;
pub mod audit;
pub mod checkpoints;
pub mod constitution;
pub mod export;
pub mod health;
pub mod killswitches;
pub mod members;
pub mod roles;
pub mod sessions;
pub mod simulations;
pub mod tokens;
pub mod tools;
pub mod webhooks;
pub mod workspace;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// The most pages one listing reads to fill a page for an agent token (see [`fill_page`]).
const MAX_PAGES_READ: usize = 10;

/// A page of `limit` items that `keep` accepts, read through `fetch` (given where to go on
/// from, it returns up to `limit` items in the list's order), and where the next page
/// starts (`None`: the list ended).
///
/// For what SQL does not filter: an agent token's tool patterns. Pages are read until this
/// one is full or the list ends, at most [`MAX_PAGES_READ`] of them; a short page with a
/// `next` means keep going.
pub async fn fill_page<T, Fut>(
    limit: i64,
    start: Option<String>,
    mut fetch: impl FnMut(Option<String>) -> Fut,
    keep: impl Fn(&T) -> bool,
    id: impl Fn(&T) -> String,
) -> crate::error::Result<(Vec<T>, Option<String>)>
where
    Fut: std::future::Future<Output = crate::error::Result<Vec<T>>>,
{
    let (mut items, mut from, mut next) = (Vec::new(), start, None);
    for _ in 0..MAX_PAGES_READ {
        let page = fetch(from.clone()).await?;
        let more = page.len() as i64 == limit;
        from = page.last().map(&id);
        items.extend(page.into_iter().filter(|x| keep(x)));
        if items.len() as i64 >= limit {
            items.truncate(limit as usize);
            next = items.last().map(&id);
            break;
        }
        if !more {
            next = None;
            break;
        }
        // Still short after the last read: where to go on from, if this was the last read.
        next = from.clone();
    }
    Ok((items, next))
}

/// Every route, with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(super::openapi::base())
        .routes(routes!(health::healthz))
        .routes(routes!(health::openapi_json))
        .routes(routes!(sessions::sign_in))
        .routes(routes!(sessions::sign_out))
        .routes(routes!(sessions::me))
        .routes(routes!(sessions::change_password))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::end_session))
        .routes(routes!(workspace::get_workspace))
        .routes(routes!(workspace::transfer_ownership))
        .routes(routes!(workspace::get_settings, workspace::update_settings))
        .routes(routes!(members::list_members, members::create_member))
        .routes(routes!(members::get_member, members::update_member))
        .routes(routes!(roles::list_roles, roles::create_role))
        .routes(routes!(roles::get_role, roles::update_role, roles::delete_role))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::get_token, tokens::revoke_token))
        .routes(routes!(tokens::rotate_token))
        .routes(routes!(audit::list_events))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::stream_events))
        .routes(routes!(checkpoints::public_key))
        .routes(routes!(checkpoints::latest))
        .routes(routes!(checkpoints::list))
        .routes(routes!(export::export_audit))
        .routes(routes!(export::members_csv))
        .routes(routes!(export::tokens_csv))
        .routes(routes!(export::tools_csv))
        .routes(routes!(export::approvals_csv))
        .routes(routes!(tools::list_tools))
        .routes(routes!(tools::get_tool, tools::put_tool, tools::delete_tool))
        .routes(routes!(killswitches::list))
        .routes(routes!(killswitches::set_workspace))
        .routes(routes!(killswitches::set_tool))
        .routes(routes!(actions::submit, actions::list_actions))
        .routes(routes!(actions::get_action))
        .routes(routes!(actions::execute))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::get))
        .routes(routes!(approvals::decide))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(webhooks::get_webhook, webhooks::update_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(constitution::get_current))
        .routes(routes!(constitution::list_versions, constitution::publish))
        .routes(routes!(constitution::get_version))
        .routes(routes!(constitution::draft_from_action))
        .routes(routes!(simulations::simulate))
}
