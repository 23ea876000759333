//! The approval state machine: who may decide, when it is complete, when it expires,
//! and how it is consumed exactly once.
//!
//! Pure. The store loads an approval, calls these methods inside its write transaction,
//! and saves the result, so every rule here holds under concurrency too.
//!
//! ```text
//!   pending ──approve×required──▶ approved ──consume──▶ consumed
//!      │ └──deny──▶ denied            │
//!      ├──────────expire──────────────┴──▶ expired
//!      └──────────withdraw────────────┴──▶ withdrawn   (its requesting token revoked,
//!                                                       or its requester deactivated)
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Consumed,
    /// Closed because whoever asked can no longer act: the agent token that requested it
    /// was revoked, or its requester deactivated. Nobody is left to decide it for.
    Withdrawn,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Consumed => "consumed",
            State::Withdrawn => "withdrawn",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        [State::Pending, State::Approved, State::Denied, State::Expired, State::Consumed, State::Withdrawn]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

/// An approval, as the rules need it.
#[derive(Clone, Debug, PartialEq)]
pub struct Approval {
    pub state: State,
    pub required: u8,
    pub requester_id: String,
    pub payload_sha256: String,
    pub expires_at: DateTime<Utc>,
    /// Who has decided so far, with what.
    pub decisions: Vec<(String, Verdict)>,
}

/// Where a hash was checked against the pinned one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Decide,
    Execute,
}

/// Why an operation was refused. Each maps to one error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The hash the caller saw (or re-sent) is not the pinned one.
    HashMismatch {
        pinned: String,
        given: String,
        /// Whose hash it was: an approver's (what they were shown) or an executing
        /// agent's (the payload it sent). The two are told different things to do.
        at: Step,
    },
    /// The requester never counts towards their own approval.
    RequesterCannotDecide,
    /// Each human decides once.
    AlreadyDecided,
    /// It has expired (and is now recorded so).
    Expired,
    /// Decisions are only taken while pending.
    NotPending(State),
    /// Execution needs a complete approval.
    NotApproved {
        approvals: usize,
        required: u8,
    },
    Denied,
    Consumed,
    Withdrawn,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::HashMismatch { .. } => "payload_hash_mismatch",
            Refusal::RequesterCannotDecide => "requester_cannot_decide",
            Refusal::AlreadyDecided => "already_decided",
            Refusal::Expired => "approval_expired",
            Refusal::NotPending(_) => "approval_not_pending",
            Refusal::NotApproved { .. } => "approval_pending",
            Refusal::Denied => "approval_denied",
            Refusal::Consumed => "approval_consumed",
            Refusal::Withdrawn => "approval_withdrawn",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::HashMismatch { pinned, given, at: Step::Decide } => format!(
                "you were shown a payload whose SHA-256 is {} but this approval is pinned to {}: nothing was decided; \
                 read the approval again (GET /v1/approvals/{{id}}) and decide on what it holds",
                short(given),
                short(pinned)
            ),
            Refusal::HashMismatch { pinned, given, at: Step::Execute } => format!(
                "the payload sent hashes to {} but the approval is pinned to {}: the payload changed after it was approved, \
                 so it did not run; send exactly the payload that was approved, or submit the new one for approval",
                short(given),
                short(pinned)
            ),
            Refusal::RequesterCannotDecide => "the person who requested an action cannot decide its approval".into(),
            Refusal::AlreadyDecided => "you have already decided this approval; a second human must decide".into(),
            Refusal::Expired => "the approval has expired; the agent must submit the action again".into(),
            Refusal::NotPending(s) => format!("the approval is already {}", s.as_str()),
            Refusal::NotApproved { approvals, required } => {
                format!("the approval has {approvals} of {required} approvals; it cannot run yet")
            }
            Refusal::Denied => "the approval was denied".into(),
            Refusal::Withdrawn => {
                "the approval was withdrawn: the agent token that requested it was revoked, or its requester deactivated".into()
            }
            Refusal::Consumed => {
                "the approval has already been used: each approval runs its action exactly once (its result is on GET /v1/actions/{id})"
                    .into()
            }
        }
    }
}

fn short(h: &str) -> String {
    h.chars().take(12).collect()
}

/// What a decision did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    /// An approval was counted; `complete` when it reached `required`.
    Approved {
        approvals: usize,
        complete: bool,
    },
    Denied,
}

impl Approval {
    /// How many humans have approved.
    pub fn approvals(&self) -> usize {
        self.decisions.iter().filter(|(_, v)| *v == Verdict::Approve).count()
    }

    /// Marks an open approval expired once its time has come. Returns whether it changed,
    /// so the caller records the expiry exactly once.
    pub fn expire_if_due(&mut self, now: DateTime<Utc>) -> bool {
        if matches!(self.state, State::Pending | State::Approved) && now >= self.expires_at {
            self.state = State::Expired;
            return true;
        }
        false
    }

    /// Withdraws an open approval (its requesting token revoked, its requester
    /// deactivated). Returns whether it changed, so the caller records it exactly once.
    pub fn withdraw(&mut self) -> bool {
        if matches!(self.state, State::Pending | State::Approved) {
            self.state = State::Withdrawn;
            return true;
        }
        false
    }

    /// A human's decision. `shown_sha256` is the hash the decider was shown.
    pub fn decide(&mut self, who: &str, verdict: Verdict, shown_sha256: &str, now: DateTime<Utc>) -> Result<Decided, Refusal> {
        if self.expire_if_due(now) || self.state == State::Expired {
            return Err(Refusal::Expired);
        }
        if self.state != State::Pending {
            return Err(Refusal::NotPending(self.state));
        }
        if shown_sha256 != self.payload_sha256 {
            return Err(Refusal::HashMismatch { pinned: self.payload_sha256.clone(), given: shown_sha256.to_string(), at: Step::Decide });
        }
        if who == self.requester_id {
            return Err(Refusal::RequesterCannotDecide);
        }
        if self.decisions.iter().any(|(w, _)| w == who) {
            return Err(Refusal::AlreadyDecided);
        }
        self.decisions.push((who.to_string(), verdict));
        match verdict {
            Verdict::Deny => {
                self.state = State::Denied;
                Ok(Decided::Denied)
            }
            Verdict::Approve => {
                let approvals = self.approvals();
                let complete = approvals >= self.required as usize;
                if complete {
                    self.state = State::Approved;
                }
                Ok(Decided::Approved { approvals, complete })
            }
        }
    }

    /// Uses the approval to run its action: once, with the pinned payload, in time.
    pub fn consume(&mut self, payload_sha256: &str, now: DateTime<Utc>) -> Result<(), Refusal> {
        if self.expire_if_due(now) {
            return Err(Refusal::Expired);
        }
        match self.state {
            State::Approved => {}
            State::Pending => return Err(Refusal::NotApproved { approvals: self.approvals(), required: self.required }),
            State::Denied => return Err(Refusal::Denied),
            State::Consumed => return Err(Refusal::Consumed),
            State::Expired => return Err(Refusal::Expired),
            State::Withdrawn => return Err(Refusal::Withdrawn),
        }
        if payload_sha256 != self.payload_sha256 {
            return Err(Refusal::HashMismatch {
                pinned: self.payload_sha256.clone(),
                given: payload_sha256.to_string(),
                at: Step::Execute,
            });
        }
        self.state = State::Consumed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn approval(required: u8) -> Approval {
        Approval {
            state: State::Pending,
            required,
            requester_id: "usr_req".into(),
            payload_sha256: "h".into(),
            expires_at: t(1800),
            decisions: vec![],
        }
    }

    #[test]
    fn dual_needs_two_distinct_humans_and_not_the_requester() {
        let mut a = approval(2);
        assert_eq!(a.decide("usr_req", Verdict::Approve, "h", t(1)), Err(Refusal::RequesterCannotDecide));
        assert_eq!(a.decide("usr_a", Verdict::Approve, "h", t(1)), Ok(Decided::Approved { approvals: 1, complete: false }));
        assert_eq!(a.decide("usr_a", Verdict::Approve, "h", t(2)), Err(Refusal::AlreadyDecided));
        assert_eq!(a.consume("h", t(3)), Err(Refusal::NotApproved { approvals: 1, required: 2 }));
        assert_eq!(a.decide("usr_b", Verdict::Approve, "h", t(4)), Ok(Decided::Approved { approvals: 2, complete: true }));
        assert_eq!(a.consume("h", t(5)), Ok(()));
        assert_eq!(a.consume("h", t(6)), Err(Refusal::Consumed));
    }

    #[test]
    fn one_deny_ends_it() {
        let mut a = approval(2);
        a.decide("usr_a", Verdict::Approve, "h", t(1)).unwrap();
        assert_eq!(a.decide("usr_b", Verdict::Deny, "h", t(2)), Ok(Decided::Denied));
        assert_eq!(a.consume("h", t(3)), Err(Refusal::Denied));
        assert_eq!(a.decide("usr_c", Verdict::Approve, "h", t(4)), Err(Refusal::NotPending(State::Denied)));
    }

    #[test]
    fn hash_drift_and_expiry_are_refused() {
        let mut a = approval(1);
        assert!(matches!(a.decide("usr_a", Verdict::Approve, "other", t(1)), Err(Refusal::HashMismatch { .. })));
        a.decide("usr_a", Verdict::Approve, "h", t(1)).unwrap();
        assert!(matches!(a.consume("other", t(2)), Err(Refusal::HashMismatch { .. })));
        assert_eq!(a.consume("h", t(1800)), Err(Refusal::Expired));
        assert_eq!(a.state, State::Expired);
        assert!(!a.expire_if_due(t(1900)), "expiry is recorded once");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Decide(u8, bool, bool),
        Consume(bool),
        Advance(i64),
        Withdraw,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4, any::<bool>(), any::<bool>()).prop_map(|(w, ok, h)| Op::Decide(w, ok, h)),
            any::<bool>().prop_map(Op::Consume),
            (0i64..1000).prop_map(Op::Advance),
            Just(Op::Withdraw),
        ]
    }

    proptest! {
        /// No sequence of operations executes twice, or executes without the required
        /// number of distinct non-requester approvals, the pinned hash, and time left.
        #[test]
        fn never_runs_twice_or_without_approval(required in 1u8..=2, ops in prop::collection::vec(arb_op(), 0..40)) {
            let mut a = approval(required);
            let mut now = 0i64;
            let mut runs = 0;
            let mut withdrawn = false;
            for op in ops {
                match op {
                    Op::Decide(w, approve, right_hash) => {
                        let who = if w == 0 { "usr_req".to_string() } else { format!("usr_{w}") };
                        let v = if approve { Verdict::Approve } else { Verdict::Deny };
                        let _ = a.decide(&who, v, if right_hash { "h" } else { "x" }, t(now));
                    }
                    Op::Consume(right_hash) => {
                        let ok = a.consume(if right_hash { "h" } else { "x" }, t(now)).is_ok();
                        if ok {
                            runs += 1;
                            prop_assert!(right_hash);
                            prop_assert!(now < 1800);
                            let approvers: std::collections::BTreeSet<_> = a.decisions.iter()
                                .filter(|(_, v)| *v == Verdict::Approve).map(|(w, _)| w.clone()).collect();
                            prop_assert!(approvers.len() >= required as usize);
                            prop_assert!(!approvers.contains("usr_req"));
                            prop_assert!(!a.decisions.iter().any(|(_, v)| *v == Verdict::Deny));
                            prop_assert!(!withdrawn, "a withdrawn approval never runs");
                        }
                    }
                    Op::Advance(s) => now += s,
                    // Withdrawing what already ran changes nothing (nor may it).
                    Op::Withdraw => withdrawn |= a.withdraw(),
                }
            }
            prop_assert!(runs <= 1);
        }
    }
}
