//! The constitution's published versions, and the reads that replay recorded actions
//! under other rules (what-if simulation, drafting a rule from an action).
//!
//! Versions are immutable: publishing appends the next number, in the same transaction
//! as its `constitution.published` audit event (which carries the diff against the
//! previous version), and moves the configuration epoch so that every cache of the rules
//! in force is dropped before the publish is acknowledged. Triggers refuse UPDATE and
//! DELETE on `constitution_versions`.

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::db::{Conn, DbError, Row, Value};
use super::{Origin, SqlStore, WorkspaceId};
use crate::audit::EventDraft;
use crate::canonical;
use crate::constitution::Rule;
use crate::error::{Error, Result};
use crate::model::ActionStatus;
use crate::params;

/// One published version of a workspace's constitution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConstitutionVersion {
    /// 1, 2, 3…, per workspace.
    pub version: i64,
    pub rules: Vec<Rule>,
    /// SHA-256 of the rules' RFC 8785 canonical form (also on the audit event).
    pub rules_sha256: String,
    /// The member who published it.
    pub published_by: String,
    pub published_at: String,
}

/// A version without its rules, for the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionSummary {
    pub version: i64,
    pub rule_count: i64,
    pub rules_sha256: String,
    pub published_by: String,
    pub published_at: String,
}

/// How one version differs from the one before it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleDiff {
    /// Ids of rules that are new.
    pub added: Vec<String>,
    /// Ids of rules that are gone.
    pub removed: Vec<String>,
    /// Rules with the same id whose content changed, before and after.
    pub changed: Vec<ChangedRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangedRule {
    pub id: String,
    pub before: Rule,
    pub after: Rule,
}

/// The diff between two lists of rules, by id, in the order of `after` (then `before`).
pub fn diff_rules(before: &[Rule], after: &[Rule]) -> RuleDiff {
    let old: HashMap<&str, &Rule> = before.iter().map(|r| (r.id.as_str(), r)).collect();
    let new: HashMap<&str, &Rule> = after.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut d = RuleDiff::default();
    for r in after {
        match old.get(r.id.as_str()) {
            None => d.added.push(r.id.clone()),
            Some(b) if *b != r => d.changed.push(ChangedRule { id: r.id.clone(), before: (*b).clone(), after: r.clone() }),
            Some(_) => {}
        }
    }
    d.removed = before.iter().filter(|r| !new.contains_key(r.id.as_str())).map(|r| r.id.clone()).collect();
    d
}

/// A recorded action with what a replay needs to decide it again: its stored payload and
/// context. (Who its requester and agent token are comes from [`People`].)
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayAction {
    pub id: String,
    pub tool: String,
    /// The status it was recorded with (and has now).
    pub status: ActionStatus,
    /// The payload's canonical JSON text, as recorded.
    pub payload: String,
    pub resource: Option<String>,
    pub confidence: Option<f64>,
    pub requester_id: String,
    pub agent_token_id: Option<String>,
    pub created_at: String,
}

/// The workspace's members and agent tokens as they are now, for the facts of replayed
/// actions: read once per simulation rather than joined into every row.
#[derive(Clone, Debug, Default)]
pub struct People {
    /// Member id → (e-mail, role name: a built-in role or a custom role's name).
    pub members: HashMap<String, (String, String)>,
    /// Token id → name.
    pub tokens: HashMap<String, String>,
}

/// Which recorded actions a page holds.
#[derive(Clone, Debug, Default)]
pub struct ReplayQuery {
    /// Actions with ids before this one (newest first paging).
    pub before: Option<String>,
    /// Actions created at or after this time.
    pub since: Option<String>,
    /// Only this requester's actions.
    pub requester_id: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// A page of recorded actions, newest first.
#[derive(Clone, Debug, Default)]
pub struct ReplayPage {
    pub actions: Vec<ReplayAction>,
    /// No action matches beyond this page.
    pub exhausted: bool,
}

/// Payloads up to this size come with the page's one query; larger ones are read one at
/// a time, up to [`PAGE_LARGE_BYTES`] per page. So a page of `limit` actions holds at
/// most `limit × INLINE_PAYLOAD_BYTES + PAGE_LARGE_BYTES + 1 MiB` of payload text.
pub const INLINE_PAYLOAD_BYTES: i64 = 16 * 1024;
/// The most bytes of large payloads one page reads (at least one action is always read).
pub const PAGE_LARGE_BYTES: usize = 16 * 1024 * 1024;

#[async_trait]
pub trait Constitutions {
    /// The version in force: the latest published, if any.
    async fn current_constitution(&self, ws: &WorkspaceId) -> Result<Option<ConstitutionVersion>>;
    /// Only the number of the version in force (a versions' contents never change, so
    /// what was compiled from it can be kept by number).
    async fn current_constitution_number(&self, ws: &WorkspaceId) -> Result<Option<i64>>;
    /// One version; `not_found` when the workspace has no such version.
    async fn constitution_version(&self, ws: &WorkspaceId, version: i64) -> Result<ConstitutionVersion>;
    /// Versions newest first, without their rules: those below `before`, at most `limit`.
    async fn constitution_versions(&self, ws: &WorkspaceId, before: Option<i64>, limit: i64) -> Result<Vec<VersionSummary>>;
    /// Publishes `rules` (already compiled and checked by the caller) as the next version,
    /// audited with the diff against the previous one. With `base_version`, refuses
    /// (`constitution_changed`) unless that is still the version in force (0: none).
    async fn publish_constitution(
        &self,
        ws: &WorkspaceId,
        by: &Origin,
        rules: Vec<Rule>,
        base_version: Option<i64>,
    ) -> Result<(ConstitutionVersion, RuleDiff)>;
}

#[async_trait]
pub trait History {
    /// A page of recorded actions (not dry runs, which are never recorded), newest first.
    async fn replay_page(&self, ws: &WorkspaceId, q: ReplayQuery) -> Result<ReplayPage>;
    /// Every member and agent token of the workspace, for replayed actions' facts.
    async fn people(&self, ws: &WorkspaceId) -> Result<People>;
}

const VERSION_COLS: &str = "version, rules, rules_sha256, published_by, published_at";

fn version_from_row(r: &Row) -> Result<ConstitutionVersion, DbError> {
    Ok(ConstitutionVersion {
        version: r.int(0)?,
        rules: r.json(1)?,
        rules_sha256: r.text(2)?,
        published_by: r.text(3)?,
        published_at: r.text(4)?,
    })
}

fn read_current(conn: &mut dyn Conn, ws: &str) -> Result<Option<ConstitutionVersion>, DbError> {
    let sql = format!("SELECT {VERSION_COLS} FROM constitution_versions WHERE workspace_id = $1 ORDER BY version DESC LIMIT 1");
    conn.query_opt(&sql, params![ws])?.map(|r| version_from_row(&r)).transpose()
}

/// The SHA-256 of a list of rules' canonical form.
pub fn rules_sha256(rules: &[Rule]) -> Result<String> {
    let value = serde_json::to_value(rules).map_err(|e| Error::internal(e.to_string()))?;
    Ok(canonical::pin(&value).map_err(|e| Error::internal(e.to_string()))?.sha256)
}

#[async_trait]
impl Constitutions for SqlStore {
    async fn current_constitution(&self, ws: &WorkspaceId) -> Result<Option<ConstitutionVersion>> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                Ok(read_current(conn, ws.as_str())?)
            })
            .await
    }

    async fn current_constitution_number(&self, ws: &WorkspaceId) -> Result<Option<i64>> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let row = conn.query_opt(
                    "SELECT version FROM constitution_versions WHERE workspace_id = $1 ORDER BY version DESC LIMIT 1",
                    params![ws.as_str()],
                )?;
                Ok(row.map(|r| r.int(0)).transpose()?)
            })
            .await
    }

    async fn constitution_version(&self, ws: &WorkspaceId, version: i64) -> Result<ConstitutionVersion> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let sql = format!("SELECT {VERSION_COLS} FROM constitution_versions WHERE workspace_id = $1 AND version = $2");
                let row = conn
                    .query_opt(&sql, params![ws.as_str(), version])?
                    .ok_or_else(|| Error::not_found("constitution version", &version.to_string()))?;
                Ok(version_from_row(&row)?)
            })
            .await
    }

    async fn constitution_versions(&self, ws: &WorkspaceId, before: Option<i64>, limit: i64) -> Result<Vec<VersionSummary>> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows = conn.query(
                    "SELECT version, rule_count, rules_sha256, published_by, published_at FROM constitution_versions \
                     WHERE workspace_id = $1 AND (CAST($2 AS BIGINT) IS NULL OR version < $2) ORDER BY version DESC LIMIT $3",
                    params![ws.as_str(), before, limit],
                )?;
                rows.iter()
                    .map(|r| {
                        Ok(VersionSummary {
                            version: r.int(0)?,
                            rule_count: r.int(1)?,
                            rules_sha256: r.text(2)?,
                            published_by: r.text(3)?,
                            published_at: r.text(4)?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn publish_constitution(
        &self,
        ws: &WorkspaceId,
        by: &Origin,
        rules: Vec<Rule>,
        base_version: Option<i64>,
    ) -> Result<(ConstitutionVersion, RuleDiff)> {
        let (ws, by) = (ws.clone(), by.clone());
        let text = serde_json::to_string(&rules).map_err(|e| Error::internal(e.to_string()))?;
        let sha = rules_sha256(&rules)?;
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                // No row lock (on PostgreSQL it would need UPDATE on an append-only
                // table): two replicas publishing at once both try the same number, and
                // the insert below sends the loser round again to be checked against it.
                let previous = read_current(&mut *tx, w)?;
                let previous_version = previous.as_ref().map_or(0, |p| p.version);
                if let Some(base) = base_version
                    && base > previous_version
                {
                    return Err(Error::unprocessable(
                        "invalid_base_version",
                        format!("there is no version {base}: the newest is {previous_version} (0: none yet); start from it"),
                    ));
                }
                // The same rules again would be a version that changes nothing but its number,
                // and would refuse every action decided under the one it replaces.
                if let Some(p) = &previous
                    && p.rules_sha256 == sha
                {
                    return Err(Error::conflict(
                        "constitution_unchanged",
                        format!("these rules are version {previous_version}, in force now: nothing to publish"),
                    ));
                }
                if let Some(base) = base_version
                    && base != previous_version
                {
                    return Err(Error::conflict(
                        "constitution_changed",
                        format!(
                            "version {previous_version} was published since version {base} you started from; review it and publish again with base_version {previous_version}"
                        ),
                    ));
                }
                tx.workspace_config_changed(w)?;
                let version = previous_version + 1;
                let now = tx.now_ts();
                let inserted = tx.execute(
                    "INSERT INTO constitution_versions (workspace_id, version, rules, rule_count, rules_sha256, published_by, published_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (workspace_id, version) DO NOTHING",
                    params![w, version, &text, rules.len() as i64, &sha, &by.actor.id, &now],
                )?;
                if inserted == 0 {
                    // Another replica published this number first (with no version yet there
                    // was no row to lock): run again, and be checked against what it published.
                    return Err(tx.retry_later().into());
                }
                let diff = diff_rules(previous.as_ref().map_or(&[][..], |p| &p.rules), &rules);
                tx.append(
                    w,
                    EventDraft::new("constitution.published", by.actor.clone(), by.via).resource(format!("constitution:{version}")).data(
                        json!({
                            "version": version,
                            "previous_version": previous.as_ref().map(|p| p.version),
                            "rule_count": rules.len(),
                            "rules_sha256": sha,
                            "added": diff.added,
                            "removed": diff.removed,
                            "changed": diff.changed,
                        }),
                    ),
                )?;
                let published = ConstitutionVersion { version, rules: rules.clone(), rules_sha256: sha.clone(), published_by: by.actor.id.clone(), published_at: now };
                Ok((published, diff))
            })
            .await
    }
}

/// Takes a text column out of a row without copying it.
fn take_text(r: &mut Row, i: usize) -> Result<String, DbError> {
    match r.0.get_mut(i).map(|v| std::mem::replace(v, Value::Null)) {
        Some(Value::Text(t)) => Ok(t),
        other => Err(DbError::Decode { column: i, message: format!("expected text, found {other:?}") }),
    }
}

fn take_opt_text(r: &mut Row, i: usize) -> Result<Option<String>, DbError> {
    match r.0.get_mut(i).map(|v| std::mem::replace(v, Value::Null)) {
        Some(Value::Text(t)) => Ok(Some(t)),
        Some(Value::Null) => Ok(None),
        other => Err(DbError::Decode { column: i, message: format!("expected text or null, found {other:?}") }),
    }
}

/// id, tool, status, payload (NULL when larger than `$2`), resource, confidence,
/// requester_id, agent_token_id, created_at.
fn replay_from_row(mut r: Row) -> Result<(ReplayAction, bool), DbError> {
    let status = ActionStatus::parse(&take_text(&mut r, 2)?).ok_or(DbError::Decode { column: 2, message: "unknown status".into() })?;
    let payload = take_opt_text(&mut r, 3)?;
    let large = payload.is_none();
    let a = ReplayAction {
        id: take_text(&mut r, 0)?,
        tool: take_text(&mut r, 1)?,
        status,
        payload: payload.unwrap_or_default(),
        resource: take_opt_text(&mut r, 4)?,
        confidence: r.opt_real(5)?,
        requester_id: take_text(&mut r, 6)?,
        agent_token_id: take_opt_text(&mut r, 7)?,
        created_at: take_text(&mut r, 8)?,
    };
    Ok((a, large))
}

fn read_payload(conn: &mut dyn Conn, ws: &str, id: &str) -> Result<String, DbError> {
    let row = conn.query_opt("SELECT payload FROM actions WHERE workspace_id = $1 AND id = $2", params![ws, id])?;
    row.map_or(Ok(String::new()), |r| r.text(0))
}

#[async_trait]
impl History for SqlStore {
    async fn replay_page(&self, ws: &WorkspaceId, q: ReplayQuery) -> Result<ReplayPage> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                // `id < $3` only when paging on: written as a range, it starts the index
                // scan there (an `OR $3 IS NULL` would make every page scan from the top).
                let after = if q.before.is_some() { "AND x.id < $3" } else { "AND $3 IS NULL" };
                let sql = format!(
                    "SELECT x.id, x.tool, x.status, CASE WHEN octet_length(x.payload) <= $2 THEN x.payload END, x.resource, x.confidence, \
                     x.requester_id, x.agent_token_id, x.created_at FROM actions x \
                     WHERE x.workspace_id = $1 {after} AND x.status <> 'simulated' \
                     AND ($4 IS NULL OR x.created_at >= $4) AND ($5 IS NULL OR x.requester_id = $5) ORDER BY x.id DESC LIMIT $6"
                );
                let rows =
                    conn.query(&sql, params![w, INLINE_PAYLOAD_BYTES, q.before.clone(), q.since.clone(), q.requester_id.clone(), q.limit])?;
                let full = rows.len() as i64 >= q.limit;
                let mut actions = Vec::with_capacity(rows.len());
                let mut large_bytes = 0usize;
                let mut cut = false;
                for r in rows {
                    let (mut a, large) = replay_from_row(r)?;
                    if large {
                        // A large payload: read on its own, within the page's budget.
                        if large_bytes >= PAGE_LARGE_BYTES && !actions.is_empty() {
                            cut = true;
                            break;
                        }
                        a.payload = read_payload(conn, w, &a.id)?;
                        large_bytes += a.payload.len();
                    }
                    actions.push(a);
                }
                Ok(ReplayPage { actions, exhausted: !full && !cut })
            })
            .await
    }

    async fn people(&self, ws: &WorkspaceId) -> Result<People> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                let mut people = People::default();
                let rows = conn.query(
                    "SELECT m.id, m.email, COALESCE(r.name, m.role) FROM members m LEFT JOIN roles r ON r.id = m.role WHERE m.workspace_id = $1",
                    params![w],
                )?;
                for mut r in rows {
                    people.members.insert(take_text(&mut r, 0)?, (take_text(&mut r, 1)?, take_text(&mut r, 2)?));
                }
                for mut r in conn.query("SELECT id, name FROM tokens WHERE workspace_id = $1", params![w])? {
                    people.tokens.insert(take_text(&mut r, 0)?, take_text(&mut r, 1)?);
                }
                Ok(people)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Effect;

    fn rule(id: &str, when: &str) -> Rule {
        Rule {
            id: id.into(),
            title: id.into(),
            description: String::new(),
            when: when.into(),
            effect: Effect::Deny,
            on_error: Default::default(),
        }
    }

    #[test]
    fn the_diff_names_added_removed_and_changed_rules() {
        let before = [rule("a", "true"), rule("b", "false"), rule("c", "tool == 'x'")];
        let after = [rule("c", "tool == 'y'"), rule("a", "true"), rule("d", "true")];
        let d = diff_rules(&before, &after);
        assert_eq!(d.added, ["d"]);
        assert_eq!(d.removed, ["b"]);
        assert_eq!(d.changed.len(), 1);
        assert_eq!((d.changed[0].before.when.as_str(), d.changed[0].after.when.as_str()), ("tool == 'x'", "tool == 'y'"));
        assert_eq!(diff_rules(&after, &after), RuleDiff::default());
    }
}
