//! The audit event and its hash chain.
//!
//! Each workspace's log is a chain: event `n` carries the hash of event `n-1` in
//! `prev_hash`, and its own `hash` is the SHA-256 of its RFC 8785 canonical form without
//! the `hash` field. Changing, removing or reordering any event breaks every link after
//! it, and [`Verifier`] names the first `seq` where that happens. The same code checks
//! the live store, an exported JSONL file and a signed checkpoint.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::canonical;

/// `prev_hash` of the first event of every workspace.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who did something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Actor {
    pub kind: ActorKind,
    /// A member id (`usr_…`), an agent token id (`tok_…`), or the name of a system task.
    pub id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    Agent,
    System,
}

/// Which door a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Console,
    Api,
    Agent,
    System,
}

impl ActorKind {
    /// The stored and hashed name (as serde writes it).
    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Agent => "agent",
            ActorKind::System => "system",
        }
    }
}

impl Via {
    /// The stored and hashed name (as serde writes it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Via::Console => "console",
            Via::Api => "api",
            Via::Agent => "agent",
            Via::System => "system",
        }
    }
}

impl Actor {
    pub fn user(id: impl Into<String>) -> Self {
        Actor { kind: ActorKind::User, id: id.into() }
    }
    pub fn agent(id: impl Into<String>) -> Self {
        Actor { kind: ActorKind::Agent, id: id.into() }
    }
    pub fn system(task: impl Into<String>) -> Self {
        Actor { kind: ActorKind::System, id: task.into() }
    }
}

/// Every event type Countersign writes. Webhook filters are checked against it (a typo
/// would otherwise be a subscription that never fires); every event written in a debug
/// build (the test suites) is checked against it too, so a new type cannot be left out.
/// Reads of the log do not check it: an old log may hold types no longer written.
pub const EVENT_TYPES: &[&str] = &[
    "action.blocked",
    "action.denied",
    "action.executed",
    "action.execution_refused",
    "action.failed",
    "action.requested",
    "approval.consumed",
    "approval.decision_refused",
    "approval.denied",
    "approval.expired",
    "approval.granted",
    "approval.requested",
    "approval.withdrawn",
    "constitution.published",
    "killswitch.engaged",
    "killswitch.lifted",
    "killswitch.unchanged",
    "member.created",
    "member.deactivated",
    "member.password_changed",
    "member.password_reset",
    "member.reactivated",
    "member.role_changed",
    "role.created",
    "role.deleted",
    "role.updated",
    "session.created",
    "session.failed",
    "session.revoked",
    "settings.updated",
    "token.created",
    "token.revoked",
    "token.rotated",
    "tool.created",
    "tool.deleted",
    "tool.updated",
    "webhook.created",
    "webhook.deleted",
    "webhook.disabled",
    "webhook.redelivered",
    "webhook.secret_rotated",
    "webhook.updated",
    "workspace.created",
    "workspace.ownership_transferred",
];

/// Whether `family` (`approval`, from `approval.*`) names the start of some event type.
pub fn is_event_family(family: &str) -> bool {
    EVENT_TYPES.iter().any(|t| t.strip_prefix(family).is_some_and(|rest| rest.starts_with('.')))
}

/// What an event says before the store gives it a place in the chain.
#[derive(Clone, Debug)]
pub struct EventDraft {
    pub event_type: &'static str,
    pub actor: Actor,
    pub via: Via,
    pub resource: Option<String>,
    pub payload_sha256: Option<String>,
    pub outcome: &'static str,
    pub data: serde_json::Value,
}

impl EventDraft {
    pub fn new(event_type: &'static str, actor: Actor, via: Via) -> Self {
        debug_assert!(EVENT_TYPES.contains(&event_type) || cfg!(test), "`{event_type}` is not in audit::EVENT_TYPES: add it there");
        EventDraft {
            event_type,
            actor,
            via,
            resource: None,
            payload_sha256: None,
            outcome: outcome::SUCCESS,
            data: serde_json::Value::Object(Default::default()),
        }
    }
    pub fn resource(mut self, r: impl Into<String>) -> Self {
        self.resource = Some(r.into());
        self
    }
    pub fn payload_sha256(mut self, h: impl Into<String>) -> Self {
        self.payload_sha256 = Some(h.into());
        self
    }
    pub fn outcome(mut self, o: &'static str) -> Self {
        self.outcome = o;
        self
    }
    pub fn data(mut self, d: serde_json::Value) -> Self {
        self.data = d;
        self
    }
}

/// The values of `outcome`.
pub mod outcome {
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const DENIED: &str = "denied";
    pub const BLOCKED: &str = "blocked";
    pub const PENDING: &str = "pending";
}

/// One entry of a workspace's audit log, exactly as stored, exported and hashed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Position in the workspace's chain: 1, 2, 3… with no gaps.
    pub seq: i64,
    pub id: String,
    /// RFC 3339, UTC.
    pub ts: String,
    pub workspace_id: String,
    pub event_type: String,
    pub actor: Actor,
    pub via: Via,
    pub resource: Option<String>,
    pub payload_sha256: Option<String>,
    pub outcome: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The event's fields that its hash covers: all of them but `hash`.
#[cfg(test)]
#[derive(Serialize)]
struct Hashed<'a> {
    seq: i64,
    id: &'a str,
    ts: &'a str,
    workspace_id: &'a str,
    event_type: &'a str,
    actor: &'a Actor,
    via: Via,
    resource: &'a Option<String>,
    payload_sha256: &'a Option<String>,
    outcome: &'a str,
    data: &'a serde_json::Value,
    prev_hash: &'a str,
}

impl AuditEvent {
    /// The SHA-256 of this event's canonical form without `hash`.
    pub fn compute_hash(&self) -> String {
        canonical::sha256_hex(self.canonical_form().as_bytes())
    }

    /// The canonical form of `data` alone: what the store keeps in its `data` column, so
    /// the bytes stored are the bytes hashed, and they are written once.
    pub fn canonical_data(&self) -> String {
        let mut out = String::with_capacity(256);
        canonical::write_value(&self.data, &mut out);
        out
    }

    /// The same bytes as [`AuditEvent::canonical_form`], through the general
    /// canonicaliser: the reference the fast form is tested against.
    #[cfg(test)]
    fn reference_form(&self) -> String {
        let view = Hashed {
            seq: self.seq,
            id: &self.id,
            ts: &self.ts,
            workspace_id: &self.workspace_id,
            event_type: &self.event_type,
            actor: &self.actor,
            via: self.via,
            resource: &self.resource,
            payload_sha256: &self.payload_sha256,
            outcome: &self.outcome,
            data: &self.data,
            prev_hash: &self.prev_hash,
        };
        canonical::canonicalize(&view).unwrap_or_default()
    }

    /// The RFC 8785 canonical form of the event without `hash`: the bytes its hash covers.
    /// Written field by field (the keys in their canonical order) because it is on every
    /// write's path; a property test holds it to the general canonicaliser.
    pub fn canonical_form(&self) -> String {
        self.canonical_form_with(&self.canonical_data())
    }

    /// [`AuditEvent::canonical_form`] around `data` already in canonical form.
    fn canonical_form_with(&self, data: &str) -> String {
        use canonical::write_str;
        let mut out = String::with_capacity(384 + data.len());
        let opt = |out: &mut String, v: &Option<String>| match v {
            Some(s) => write_str(s, out),
            None => out.push_str("null"),
        };
        out.push_str("{\"actor\":{\"id\":");
        write_str(&self.actor.id, &mut out);
        out.push_str(",\"kind\":");
        write_str(self.actor.kind.as_str(), &mut out);
        out.push_str("},\"data\":");
        out.push_str(data);
        out.push_str(",\"event_type\":");
        write_str(&self.event_type, &mut out);
        out.push_str(",\"id\":");
        write_str(&self.id, &mut out);
        out.push_str(",\"outcome\":");
        write_str(&self.outcome, &mut out);
        out.push_str(",\"payload_sha256\":");
        opt(&mut out, &self.payload_sha256);
        out.push_str(",\"prev_hash\":");
        write_str(&self.prev_hash, &mut out);
        out.push_str(",\"resource\":");
        opt(&mut out, &self.resource);
        out.push_str(",\"seq\":");
        canonical::write_value(&serde_json::Value::from(self.seq), &mut out);
        out.push_str(",\"ts\":");
        write_str(&self.ts, &mut out);
        out.push_str(",\"via\":");
        write_str(self.via.as_str(), &mut out);
        out.push_str(",\"workspace_id\":");
        write_str(&self.workspace_id, &mut out);
        out.push('}');
        out
    }

    /// Builds the next event of a chain whose head is `(prev_seq, prev_hash)`.
    pub fn seal(draft: EventDraft, workspace_id: &str, prev_seq: i64, prev_hash: &str, ts: String) -> Self {
        Self::seal_with_data(draft, workspace_id, prev_seq, prev_hash, ts).0
    }

    /// [`AuditEvent::seal`], also giving `data`'s canonical form (see
    /// [`AuditEvent::canonical_data`]), computed once for the hash and the store.
    pub fn seal_with_data(draft: EventDraft, workspace_id: &str, prev_seq: i64, prev_hash: &str, ts: String) -> (Self, String) {
        let mut e = AuditEvent {
            seq: prev_seq + 1,
            id: crate::ids::new_id(crate::ids::IdKind::Event),
            ts,
            workspace_id: workspace_id.to_string(),
            event_type: draft.event_type.to_string(),
            actor: draft.actor,
            via: draft.via,
            resource: draft.resource,
            payload_sha256: draft.payload_sha256,
            outcome: draft.outcome.to_string(),
            data: draft.data,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        let data = e.canonical_data();
        e.hash = canonical::sha256_hex(e.canonical_form_with(&data).as_bytes());
        (e, data)
    }
}

/// Where a chain broke and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Break {
    pub seq: i64,
    pub reason: String,
}

/// Checks events one at a time, in order, keeping only the last link: constant memory
/// over any length of log.
#[derive(Debug)]
pub struct Verifier {
    workspace_id: Option<String>,
    last_seq: i64,
    last_hash: String,
    checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier for a chain that starts at its genesis.
    pub fn new() -> Self {
        Verifier { workspace_id: None, last_seq: 0, last_hash: GENESIS_HASH.to_string(), checked: 0 }
    }

    /// A verifier for the part of a chain after a known link (a checkpoint, or the last
    /// event of an earlier page).
    pub fn resume(workspace_id: &str, seq: i64, hash: &str) -> Self {
        Verifier { workspace_id: Some(workspace_id.to_string()), last_seq: seq, last_hash: hash.to_string(), checked: 0 }
    }

    /// Checks the next event.
    pub fn push(&mut self, e: &AuditEvent) -> Result<(), Break> {
        let fail = |reason: String| Err(Break { seq: e.seq, reason });
        match &self.workspace_id {
            Some(ws) if *ws != e.workspace_id => {
                return fail(format!("event belongs to workspace {} but the chain is {ws}", e.workspace_id));
            }
            None => self.workspace_id = Some(e.workspace_id.clone()),
            _ => {}
        }
        if e.seq != self.last_seq + 1 {
            return Err(Break {
                seq: self.last_seq + 1,
                reason: format!("expected seq {} but found {}: events are missing or out of order", self.last_seq + 1, e.seq),
            });
        }
        if !canonical_hash_eq(&e.prev_hash, &self.last_hash) {
            return fail(format!("prev_hash does not match the hash of seq {}", self.last_seq));
        }
        if !canonical_hash_eq(&e.compute_hash(), &e.hash) {
            return fail("the event's content does not match its hash: it was changed after it was written".to_string());
        }
        self.last_seq = e.seq;
        self.last_hash = e.hash.clone();
        self.checked += 1;
        Ok(())
    }

    /// How many events passed.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The last verified link: `(seq, hash)`.
    pub fn head(&self) -> (i64, &str) {
        (self.last_seq, &self.last_hash)
    }
}

fn canonical_hash_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// The outcome of verifying a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    /// How many events were checked and found sound.
    pub events: u64,
    /// The first `seq` at which the chain does not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last sound link.
    pub head_seq: i64,
    pub head_hash: String,
}

impl VerifyReport {
    pub fn from(v: &Verifier, broken: Option<Break>) -> Self {
        let (head_seq, head_hash) = v.head();
        VerifyReport {
            ok: broken.is_none(),
            events: v.checked(),
            first_broken_seq: broken.as_ref().map(|b| b.seq),
            reason: broken.map(|b| b.reason),
            head_seq,
            head_hash: head_hash.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_document_lists_every_event_type_and_no_other() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap();
        let table = &doc[doc.find("| family | types |").expect("the event type table")..];
        let mut listed: Vec<String> = Vec::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let family = cells[1].trim_matches('`');
            listed.extend(cells[2].split(", ").map(|t| format!("{family}.{}", t.trim_matches('`'))));
        }
        listed.sort();
        let mut types: Vec<String> = EVENT_TYPES.iter().map(|t| t.to_string()).collect();
        types.sort();
        assert_eq!(listed, types);
        assert!(is_event_family("approval") && !is_event_family("approv") && !is_event_family("action.requested"));
    }

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out.last().map(|e| (e.seq, e.hash.clone())).unwrap_or((0, GENESIS_HASH.to_string()));
            let draft = EventDraft::new("member.created", Actor::user("usr_1"), Via::Api)
                .resource(format!("usr_{i}"))
                .data(serde_json::json!({"i": i}));
            out.push(AuditEvent::seal(draft, "org_1", seq, &hash, format!("2026-01-01T00:00:{i:02}.000000Z")));
        }
        out
    }

    fn verify(events: &[AuditEvent]) -> Result<u64, Break> {
        let mut v = Verifier::new();
        for e in events {
            v.push(e)?;
        }
        Ok(v.checked())
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(10)), Ok(10));
    }

    #[test]
    fn a_changed_field_breaks_at_its_seq() {
        let mut c = chain(10);
        c[6].data = serde_json::json!({"i": 600});
        assert_eq!(verify(&c).unwrap_err().seq, 7);
        let mut c = chain(10);
        c[3].outcome = "failure".into();
        assert_eq!(verify(&c).unwrap_err().seq, 4);
    }

    #[test]
    fn a_removed_or_reordered_event_is_caught() {
        let mut c = chain(10);
        c.remove(4);
        assert_eq!(verify(&c).unwrap_err().seq, 5);
        let mut c = chain(10);
        c.swap(2, 3);
        assert_eq!(verify(&c).unwrap_err().seq, 3);
    }

    #[test]
    fn a_rehashed_forgery_still_breaks_the_next_link() {
        let mut c = chain(10);
        c[4].data = serde_json::json!({"forged": true});
        c[4].hash = c[4].compute_hash();
        assert_eq!(verify(&c).unwrap_err().seq, 6);
    }

    #[test]
    fn stored_names_are_the_names_serde_writes() {
        use crate::store::engine::enum_text;
        for k in [ActorKind::User, ActorKind::Agent, ActorKind::System] {
            assert_eq!(k.as_str(), enum_text(&k));
        }
        for v in [Via::Console, Via::Api, Via::Agent, Via::System] {
            assert_eq!(v.as_str(), enum_text(&v));
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_canonical_form_matches_the_reference(
            id in "\\PC{0,20}", res in proptest::option::of("\\PC{0,20}"), outcome in "[a-z\"\\\\\n]{0,8}",
            n in proptest::prelude::any::<i32>(), text in "\\PC{0,16}",
        ) {
            let draft = EventDraft::new("x.y", Actor::agent(id), Via::Agent)
                .data(serde_json::json!({"n": n, "text": text, "list": [1, "two", null], "nested": {"b": true, "a": 0.5}}));
            let mut e = AuditEvent::seal(draft, "org_1", 41, GENESIS_HASH, "2026-01-01T00:00:00.000000Z".into());
            e.resource = res;
            e.outcome = outcome;
            proptest::prop_assert_eq!(e.canonical_form(), e.reference_form());
        }
    }

    #[test]
    fn resuming_from_a_link_checks_only_what_follows() {
        let c = chain(10);
        let mut v = Verifier::resume("org_1", c[4].seq, &c[4].hash);
        for e in &c[5..] {
            v.push(e).unwrap();
        }
        assert_eq!(v.checked(), 5);
    }
}
