//! The constitution: its published versions, publishing the next one, and drafting a rule
//! from a recorded action. (Evaluation happens in `actions::submit`; simulation in
//! `simulations`.)

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::parse_ts;
use crate::constitution::{self, Compiled, Rule};
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::model::ActionStatus;
use crate::permissions::Permission;
use crate::server::AppState;
use crate::server::auth::{Auth, need};
use crate::server::error::ErrorBody;
use crate::server::extract::{Body, Query};
use crate::simulation::{self, DraftedRule, Recorded};
use crate::store::{ConstitutionVersion, RuleDiff, VersionSummary, WorkspaceId};

/// The constitution in force for `ws`, compiled: from the cache while the configuration
/// epoch holds (a publish moves it); else its number is read, and the version compiled
/// once per server and kept by number.
///
/// Fails closed: a stored version that no longer compiles (it compiled when published,
/// so only a change of this binary or of the database could do that) is a 503
/// `constitution_unavailable`, and no action is decided without its rules.
///
/// `epoch` is the configuration epoch read when the caller was authenticated, so one
/// request sees one configuration.
pub async fn in_force(state: &AppState, ws: &WorkspaceId, epoch: u64) -> Result<Compiled> {
    if let Some(hit) = state.constitution_cache.get(ws, epoch) {
        return hit;
    }
    let compiled = match state.store.current_constitution_number(ws).await? {
        None => constitution::compile(&[], None).map_err(|_| Error::internal("an empty constitution did not compile")),
        Some(version) => compiled_version(state, ws, version).await?,
    };
    state.constitution_cache.put(ws.clone(), epoch, compiled.clone());
    compiled
}

/// A published version, compiled once per server (versions never change). The outer
/// `Result` is a failure to read it; the inner one says whether it compiles.
async fn compiled_version(state: &AppState, ws: &WorkspaceId, version: i64) -> Result<Result<Compiled>> {
    let key = (ws.clone(), version);
    if let Some(hit) = state.compiled_versions.get(&key, 0) {
        return Ok(hit);
    }
    let v = state.store.constitution_version(ws, version).await?;
    let compiled = tokio::task::spawn_blocking(move || constitution::compile(&v.rules, Some(version)))
        .await
        .map_err(|_| Error::internal("compiling the constitution failed"))?;
    let compiled = compiled.map_err(|errors| {
        let first = errors.first().map(|e| e.message.clone()).unwrap_or_default();
        tracing::error!(workspace = %ws, version, problem = %first, "the constitution in force does not compile");
        Error::unavailable(
            "constitution_unavailable",
            format!(
                "the constitution in force (version {version}) could not be compiled ({first}); no action is decided without its rules: publish a corrected version"
            ),
        )
    });
    state.compiled_versions.put(key, 0, compiled.clone());
    Ok(compiled)
}

/// The constitution in force. Before any is published: version null, no rules.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CurrentConstitution {
    pub version: Option<i64>,
    pub rules: Vec<Rule>,
    pub rules_sha256: Option<String>,
    pub published_by: Option<String>,
    pub published_at: Option<String>,
}

/// The constitution in force: its version and rules.
#[utoipa::path(get, path = "/v1/constitution", tag = "constitution", responses(
    (status = 200, body = CurrentConstitution),
    (status = 403, body = ErrorBody),
))]
pub async fn get_current(State(state): State<AppState>, caller: Auth<need::ConstitutionRead>) -> Result<Json<CurrentConstitution>> {
    Ok(Json(match state.store.current_constitution(&caller.workspace).await? {
        Some(v) => CurrentConstitution {
            version: Some(v.version),
            rules: v.rules,
            rules_sha256: Some(v.rules_sha256),
            published_by: Some(v.published_by),
            published_at: Some(v.published_at),
        },
        None => CurrentConstitution { version: None, rules: Vec::new(), rules_sha256: None, published_by: None, published_at: None },
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// Versions older than this one (the `next` of the previous page).
    pub before: Option<i64>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    /// Newest first, without their rules.
    pub items: Vec<VersionSummary>,
    /// Pass as `before` for the next page.
    pub next: Option<i64>,
}

/// Every published version, newest first (rules left out: read one version for them).
#[utoipa::path(get, path = "/v1/constitution/versions", tag = "constitution", params(VersionsQuery), responses(
    (status = 200, body = VersionList),
    (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
pub async fn list_versions(
    State(state): State<AppState>,
    caller: Auth<need::ConstitutionRead>,
    Query(q): Query<VersionsQuery>,
) -> Result<Json<VersionList>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::bad_request("invalid_query", "limit must be between 1 and 200"));
    }
    let items = state.store.constitution_versions(&caller.workspace, q.before, limit).await?;
    let next = (items.len() as i64 == limit).then(|| items.last().map(|v| v.version)).flatten();
    Ok(Json(VersionList { items, next }))
}

/// One published version, with its rules. Versions never change.
#[utoipa::path(get, path = "/v1/constitution/versions/{version}", tag = "constitution",
    params(("version" = i64, Path, description = "version number, from 1")),
    responses(
        (status = 200, body = ConstitutionVersion),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get_version(
    State(state): State<AppState>,
    caller: Auth<need::ConstitutionRead>,
    Path(version): Path<String>,
) -> Result<Json<ConstitutionVersion>> {
    let n = version.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        let shown: String = version.chars().filter(|c| c.is_ascii_graphic()).take(40).collect();
        Error::bad_request("invalid_version", format!("`{shown}` is not a version number: versions are 1, 2, 3…"))
    })?;
    Ok(Json(state.store.constitution_version(&caller.workspace, n).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishConstitution {
    /// The whole constitution: every rule, in the order they are evaluated and cited.
    pub rules: Vec<Rule>,
    /// The version this one was edited from (0 when there was none): the publish is
    /// refused with 409 `constitution_changed` if another was published since.
    pub base_version: Option<i64>,
}

/// A version just published, and how it differs from the one before.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Published {
    pub version: i64,
    pub rules: Vec<Rule>,
    pub rules_sha256: String,
    pub published_by: String,
    pub published_at: String,
    pub diff: RuleDiff,
}

/// Publishes the next version of the constitution. Every rule is compiled and checked
/// first; if any has a problem, nothing is published and the 422 `invalid_constitution`
/// lists every problem of every rule in `error.errors` (rule id, index, line, column,
/// code, message). Takes effect for the very next action.
#[utoipa::path(post, path = "/v1/constitution/versions", tag = "constitution", request_body = PublishConstitution, responses(
    (status = 201, description = "published", body = Published),
    (status = 403, body = ErrorBody),
    (status = 409, description = "constitution_changed: another version was published since base_version; constitution_unchanged: these are the rules in force", body = ErrorBody),
    (status = 422, description = "invalid_constitution (with `errors`), too_many_rules, invalid_base_version", body = ErrorBody),
))]
pub async fn publish(
    State(state): State<AppState>,
    caller: Auth<need::ConstitutionPublish>,
    Body(req): Body<PublishConstitution>,
) -> Result<(StatusCode, Json<Published>)> {
    caller.require_human("publishing the constitution")?;
    if let Some(b) = req.base_version
        && b < 0
    {
        return Err(Error::unprocessable("invalid_field", "base_version is a version number, or 0 for none"));
    }
    let rules = req.rules;
    let rules = tokio::task::spawn_blocking(move || simulation::compile_rules(&rules, None).map(|_| rules))
        .await
        .map_err(|_| Error::internal("compiling the constitution failed"))??;
    let (v, diff) = state.store.publish_constitution(&caller.workspace, &caller.origin(), rules, req.base_version).await?;
    let out = Published {
        version: v.version,
        rules: v.rules,
        rules_sha256: v.rules_sha256,
        published_by: v.published_by,
        published_at: v.published_at,
        diff,
    };
    Ok((StatusCode::CREATED, Json(out)))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct DraftRules {
    /// The constitution in force with the drafted rule added at the end: ready for
    /// `POST /v1/simulations` as `draft.rules`, and then for publishing.
    pub rules: Vec<Rule>,
}

/// A rule drawn from an action.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DraftFromAction {
    pub action_id: String,
    /// The drafted rule: it compiles, and it matches the action it was drawn from.
    pub rule: Rule,
    /// What each condition of `when` matches, for a person.
    pub explanation: Vec<String>,
    /// Checked on the action's own facts: always true (if the drawn conditions did not
    /// match, the rule falls back to the tool alone).
    pub matches_action: bool,
    /// The version in force the draft builds on (null: none).
    pub base_version: Option<i64>,
    pub draft: DraftRules,
}

/// Drafts a rule from a recorded action, for the class of action it belongs to: the same
/// tool, the resource's prefix, and the payload fields that usually decide (recipients'
/// domains, amounts rounded down to a threshold, the currency beside an amount). Its
/// effect is never looser than what the action got: `require_approval` for one that ran
/// at once or needed one approval, `require_dual` for one that needed two, `deny` for one
/// a human or a rule refused. Nothing is stored: edit it, simulate it, publish it.
///
/// Needs `constitution:read`, and the right to read the action (`actions:read`, or being
/// its requester).
#[utoipa::path(post, path = "/v1/constitution/drafts/from-action/{id}", tag = "constitution",
    params(("id" = String, Path, description = "action id (`act_…`)")),
    responses(
        (status = 200, body = DraftFromAction),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn draft_from_action(
    State(state): State<AppState>,
    caller: Auth<need::ConstitutionRead>,
    Path(id): Path<String>,
) -> Result<Json<DraftFromAction>> {
    ids::parse(IdKind::Action, &id)?;
    let action = state.store.get_action(&caller.workspace, &id).await?;
    let own = action.requester_id == caller.member_id && caller.can(Permission::ActionsSubmit);
    if !caller.can(Permission::ActionsRead) && !own {
        return Err(Error::forbidden(
            "permission_denied",
            "drafting a rule from another member's action needs the `actions:read` permission",
        ));
    }
    // A drafted rule quotes the payload (recipients' domains, amounts): a token drafts only
    // from the tools it covers, as it reads only their actions.
    if !caller.covers_tool(&action.tool) {
        return Err(Error::forbidden("tool_not_in_scope", "this action's tool is outside this token's tools"));
    }
    let people = state.store.people(&caller.workspace).await?;
    let current = state.store.current_constitution(&caller.workspace).await?;
    let (base_version, mut rules) = current.map_or((None, Vec::new()), |c| (Some(c.version), c.rules));
    let existing: Vec<String> = rules.iter().map(|r| r.id.clone()).collect();
    let now = parse_ts(&action.created_at).unwrap_or_else(|| state.clock.now());
    let recorded_status = action.status;
    let denied_by_a_human = action.status == ActionStatus::Denied && action.approval_id.is_some();
    let (drafted, matches_action) = tokio::task::spawn_blocking(move || {
        let facts = simulation::recorded_facts(
            &action.tool,
            &action.payload,
            action.resource.as_deref(),
            action.confidence,
            &action.requester_id,
            action.agent_token_id.as_deref(),
            &people,
            now,
        );
        let recorded = Recorded {
            id: &action.id,
            status: recorded_status,
            required_approvals: action.required_approvals,
            denied_by_a_human,
            created_at: &action.created_at,
        };
        let d: DraftedRule = simulation::draft_rule(&facts, &recorded, &existing);
        let ok = simulation::matches_cleanly(&d.rule, &facts);
        (d, ok)
    })
    .await
    .map_err(|_| Error::internal("drafting the rule failed"))?;
    rules.push(drafted.rule.clone());
    Ok(Json(DraftFromAction {
        action_id: id,
        rule: drafted.rule,
        explanation: drafted.explanation,
        matches_action,
        base_version,
        draft: DraftRules { rules },
    }))
}
