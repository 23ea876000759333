//! Reading the audit log. (Appending happens inside every write: see
//! [`super::engine::WriteTx::append`].)

use async_trait::async_trait;

use super::db::{DbError, Row, Value};
use super::{SqlStore, WorkspaceId};
use crate::audit::{Actor, ActorKind, AuditEvent, Verifier, VerifyReport, Via};
use crate::error::{Error, Result};
use crate::params;

/// The most events one page may hold.
pub const MAX_PAGE: i64 = 1000;

/// Events read per round trip while verifying: bounds memory over any length of log.
const VERIFY_CHUNK: i64 = 2000;

#[async_trait]
pub trait AuditLog {
    /// Events with `seq > after_seq`, oldest first, at most `limit` (capped at [`MAX_PAGE`]).
    async fn audit_page(&self, ws: &WorkspaceId, after_seq: i64, limit: i64) -> Result<Vec<AuditEvent>>;
    /// The chain head: the last `seq` and its hash (0 and the genesis hash when empty).
    async fn audit_head(&self, ws: &WorkspaceId) -> Result<(i64, String)>;
    /// Recomputes the whole chain and names the first broken `seq`.
    async fn audit_verify(&self, ws: &WorkspaceId) -> Result<VerifyReport>;
    /// Events with `seq > after_seq` that fall in `range`, oldest first, at most `limit`
    /// (capped at [`MAX_PAGE`]). Page on by passing the last `seq` as `after_seq`.
    async fn audit_range(&self, ws: &WorkspaceId, after_seq: i64, range: &AuditRange, limit: i64) -> Result<Vec<AuditEvent>>;
}

/// Whether `t` names an event type (`member.created`) or a family (`approval.*`):
/// lowercase letters, digits and `_`, in dot-separated parts.
pub fn valid_type_pattern(t: &str) -> bool {
    let name = t.strip_suffix(".*").unwrap_or(t);
    !name.is_empty()
        && name.len() <= 100
        && name.split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
}

/// Which events an export (or any ranged read) covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRange {
    /// Events with `ts >= since` (stored form: RFC 3339 UTC, microseconds, `Z`).
    pub since: Option<String>,
    /// Events with `ts < until` (same form).
    pub until: Option<String>,
    /// Event types: exact (`member.created`) or a family (`approval.*`). Empty: every type.
    pub types: Vec<String>,
    /// Events with `seq <= through_seq`: an export fixes the head it started at, so it
    /// ends even while the log grows.
    pub through_seq: Option<i64>,
}

/// The most event types one range may name.
pub const MAX_RANGE_TYPES: usize = 50;

impl AuditRange {
    /// Reads a range as people write it: `since` and `until` as RFC 3339 times (any
    /// offset; a `+` that a query string turned into a space is put back), `types` as a
    /// comma-separated list of event types or families (`approval.*`; `*` alone is every
    /// type). Refuses anything else with `invalid_query`, saying what is wrong.
    pub fn parse(since: Option<&str>, until: Option<&str>, types: Option<&str>) -> Result<AuditRange> {
        let time = |name: &str, text: &str| -> Result<String> {
            let parsed = crate::clock::parse_ts(text.trim()).or_else(|| crate::clock::parse_ts(&text.trim().replace(' ', "+")));
            parsed.map(crate::clock::format_ts).ok_or_else(|| {
                Error::bad_request(
                    "invalid_query",
                    format!("{name} must be an RFC 3339 time such as 2026-05-01T00:00:00Z (write a `+` offset as %2B in a URL)"),
                )
            })
        };
        let since = since.map(|s| time("since", s)).transpose()?;
        let until = until.map(|u| time("until", u)).transpose()?;
        if let (Some(s), Some(u)) = (&since, &until)
            && s >= u
        {
            return Err(Error::bad_request("invalid_query", "since must be before until"));
        }
        let mut list = Vec::new();
        for t in types.unwrap_or_default().split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if t == "*" {
                // Every type: no filter at all.
                return Ok(AuditRange { since, until, types: Vec::new(), through_seq: None });
            }
            if !valid_type_pattern(t) {
                let shown: String = t.chars().filter(|c| c.is_ascii_graphic()).take(60).collect();
                return Err(Error::bad_request(
                    "invalid_query",
                    format!("`{shown}` is not an event type: write `member.created`, or `approval.*` for a family"),
                ));
            }
            if !list.iter().any(|x| x == t) {
                list.push(t.to_string());
            }
        }
        if list.len() > MAX_RANGE_TYPES {
            return Err(Error::bad_request("invalid_query", format!("at most {MAX_RANGE_TYPES} event types")));
        }
        Ok(AuditRange { since, until, types: list, through_seq: None })
    }

    /// Whether the range can leave events out before `through_seq` (a filtered export is
    /// not a complete chain).
    pub fn is_filtered(&self) -> bool {
        self.since.is_some() || self.until.is_some() || !self.types.is_empty()
    }

    /// The SQL condition and its parameters, numbered from `$first`.
    fn condition(&self, first: usize) -> (String, Vec<Value>) {
        let mut sql = String::new();
        let mut params: Vec<Value> = Vec::new();
        let next = |v: Value, params: &mut Vec<Value>| {
            params.push(v);
            format!("${}", first + params.len() - 1)
        };
        if let Some(s) = self.through_seq {
            let p = next(Value::Int(s), &mut params);
            sql.push_str(&format!(" AND seq <= {p}"));
        }
        if let Some(s) = &self.since {
            let p = next(Value::from(s), &mut params);
            sql.push_str(&format!(" AND ts >= {p}"));
        }
        if let Some(u) = &self.until {
            let p = next(Value::from(u), &mut params);
            sql.push_str(&format!(" AND ts < {p}"));
        }
        if !self.types.is_empty() {
            let mut any = Vec::new();
            for t in &self.types {
                match t.strip_suffix('*') {
                    // A family: `approval.*` is every type starting `approval.`. The prefix
                    // is compared with substr, not LIKE, whose `_` would be a wildcard.
                    Some(prefix) => {
                        let p = next(Value::from(prefix), &mut params);
                        any.push(format!("substr(event_type, 1, {}) = {p}", prefix.chars().count()));
                    }
                    None => {
                        let p = next(Value::from(t), &mut params);
                        any.push(format!("event_type = {p}"));
                    }
                }
            }
            sql.push_str(&format!(" AND ({})", any.join(" OR ")));
        }
        (sql, params)
    }
}

pub(crate) const EVENT_COLS: &str =
    "seq, id, ts, workspace_id, event_type, actor_kind, actor_id, via, resource, payload_sha256, outcome, data, prev_hash, hash";

pub(crate) fn event_from_row(r: &Row) -> Result<AuditEvent, DbError> {
    let kind = |s: String| -> Result<ActorKind, DbError> {
        serde_json::from_value(serde_json::Value::String(s)).map_err(|e| DbError::Decode { column: 5, message: e.to_string() })
    };
    let via = |s: String| -> Result<Via, DbError> {
        serde_json::from_value(serde_json::Value::String(s)).map_err(|e| DbError::Decode { column: 7, message: e.to_string() })
    };
    Ok(AuditEvent {
        seq: r.int(0)?,
        id: r.text(1)?,
        ts: r.text(2)?,
        workspace_id: r.text(3)?,
        event_type: r.text(4)?,
        actor: Actor { kind: kind(r.text(5)?)?, id: r.text(6)? },
        via: via(r.text(7)?)?,
        resource: r.opt_text(8)?,
        payload_sha256: r.opt_text(9)?,
        outcome: r.text(10)?,
        data: r.json(11)?,
        prev_hash: r.text(12)?,
        hash: r.text(13)?,
    })
}

#[async_trait]
impl AuditLog for SqlStore {
    async fn audit_page(&self, ws: &WorkspaceId, after_seq: i64, limit: i64) -> Result<Vec<AuditEvent>> {
        let ws = ws.clone();
        let limit = limit.clamp(1, MAX_PAGE + 1);
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows = conn.query(
                    &format!("SELECT {EVENT_COLS} FROM audit_events WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
                    params![ws.as_str(), after_seq, limit],
                )?;
                Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn audit_head(&self, ws: &WorkspaceId) -> Result<(i64, String)> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let row = conn.query_opt("SELECT seq, hash FROM audit_heads WHERE workspace_id = $1", params![ws.as_str()])?;
                Ok(match row {
                    Some(r) => (r.int(0)?, r.text(1)?),
                    None => (0, crate::audit::GENESIS_HASH.to_string()),
                })
            })
            .await
    }

    async fn audit_verify(&self, ws: &WorkspaceId) -> Result<VerifyReport> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let mut verifier = Verifier::new();
                let mut after = 0i64;
                loop {
                    let rows = conn.query(
                        &format!("SELECT {EVENT_COLS} FROM audit_events WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
                        params![ws.as_str(), after, VERIFY_CHUNK],
                    )?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        let event = match event_from_row(row) {
                            Ok(e) => e,
                            Err(e) => {
                                let seq = row.int(0).unwrap_or(after + 1);
                                let broken = crate::audit::Break { seq, reason: format!("the stored event cannot be read: {e}") };
                                return Ok(VerifyReport::from(&verifier, Some(broken)));
                            }
                        };
                        if let Err(broken) = verifier.push(&event) {
                            return Ok(VerifyReport::from(&verifier, Some(broken)));
                        }
                        after = event.seq;
                    }
                }
                // The head row must agree with the last event: a truncated tail whose head
                // was left behind is caught here.
                let head = conn.query_opt("SELECT seq, hash FROM audit_heads WHERE workspace_id = $1", params![ws.as_str()])?;
                if let Some(h) = head {
                    let (seq, hash) = (h.int(0)?, h.text(1)?);
                    let (vseq, vhash) = verifier.head();
                    if seq != vseq || hash != vhash {
                        let broken = crate::audit::Break {
                            seq: vseq + 1,
                            reason: format!("the chain head says seq {seq} but the log ends at seq {vseq}: events are missing"),
                        };
                        return Ok(VerifyReport::from(&verifier, Some(broken)));
                    }
                }
                Ok(VerifyReport::from(&verifier, None))
            })
            .await
    }

    async fn audit_range(&self, ws: &WorkspaceId, after_seq: i64, range: &AuditRange, limit: i64) -> Result<Vec<AuditEvent>> {
        let ws = ws.clone();
        let limit = limit.clamp(1, MAX_PAGE);
        let (condition, extra) = range.condition(4);
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let mut params = vec![Value::from(ws.as_str()), Value::Int(after_seq), Value::Int(limit)];
                params.extend(extra);
                let rows = conn.query(
                    &format!("SELECT {EVENT_COLS} FROM audit_events WHERE workspace_id = $1 AND seq > $2{condition} ORDER BY seq LIMIT $3"),
                    &params,
                )?;
                Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_people_write_them() {
        let r = AuditRange::parse(Some("2026-05-01T02:00:00+02:00"), Some("2026-05-02T00:00:00Z"), Some(" member.created, approval.* ,"))
            .unwrap();
        assert_eq!(r.since.as_deref(), Some("2026-05-01T00:00:00.000000Z"));
        assert_eq!(r.until.as_deref(), Some("2026-05-02T00:00:00.000000Z"));
        assert_eq!(r.types, ["member.created", "approval.*"]);
        assert!(r.is_filtered());
        // A `+` that a query string turned into a space.
        let r = AuditRange::parse(Some("2026-05-01T02:00:00 02:00"), None, None).unwrap();
        assert_eq!(r.since.as_deref(), Some("2026-05-01T00:00:00.000000Z"));
        // `*` is every type: no filter.
        assert!(!AuditRange::parse(None, None, Some("member.*,*")).unwrap().is_filtered());
        assert!(!AuditRange::parse(None, None, None).unwrap().is_filtered());
    }

    #[test]
    fn bad_ranges_are_refused_with_invalid_query() {
        for (since, until, types) in [
            (Some("yesterday"), None, None),
            (None, Some("2026-02-30T00:00:00Z"), None),
            (Some("2026-05-02T00:00:00Z"), Some("2026-05-01T00:00:00Z"), None),
            (None, None, Some("Member.Created")),
            (None, None, Some("member.**")),
            (None, None, Some("member..created")),
            (None, None, Some("member created")),
        ] {
            let e = AuditRange::parse(since, until, types).unwrap_err();
            assert_eq!((e.status(), e.code), (400, "invalid_query"), "{since:?} {until:?} {types:?}");
        }
        let many: Vec<String> = (0..=MAX_RANGE_TYPES).map(|i| format!("t.e{i}")).collect();
        assert!(AuditRange::parse(None, None, Some(&many.join(","))).is_err());
    }

    #[test]
    fn families_match_by_prefix_not_by_like() {
        let r = AuditRange { types: vec!["approval.*".into(), "member_x.created".into()], through_seq: Some(9), ..Default::default() };
        let (sql, params) = r.condition(4);
        assert_eq!(sql, " AND seq <= $4 AND (substr(event_type, 1, 9) = $5 OR event_type = $6)");
        assert_eq!(params, [Value::Int(9), Value::from("approval."), Value::from("member_x.created")]);
    }
}
