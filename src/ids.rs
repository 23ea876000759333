//! Typed, prefixed, time-sortable identifiers.
//!
//! Every id Countersign hands out is `<prefix>_<ULID>`: the prefix says what kind of
//! thing it names (so a token id pasted where an approval id belongs is caught before
//! any lookup), and the ULID sorts by creation time, so listings by id are listings by
//! age. Ids are public: they never carry a secret.

use std::fmt;

/// The kinds of thing that have ids, with the prefix each carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKind {
    Workspace,
    User,
    Session,
    Token,
    Role,
    Action,
    Approval,
    Event,
    Webhook,
    Delivery,
    Checkpoint,
    /// One HTTP request, named in its answer's `X-Request-Id` and in the server's log.
    Request,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Workspace => "org",
            IdKind::User => "usr",
            IdKind::Session => "ses",
            IdKind::Token => "tok",
            IdKind::Role => "rol",
            IdKind::Action => "act",
            IdKind::Approval => "apv",
            IdKind::Event => "evt",
            IdKind::Webhook => "whk",
            IdKind::Delivery => "dlv",
            IdKind::Checkpoint => "chk",
            IdKind::Request => "req",
        }
    }

    /// What a person calls this kind of thing, for error messages.
    pub const fn noun(self) -> &'static str {
        match self {
            IdKind::Workspace => "workspace",
            IdKind::User => "member",
            IdKind::Session => "session",
            IdKind::Token => "token",
            IdKind::Role => "role",
            IdKind::Action => "action",
            IdKind::Approval => "approval",
            IdKind::Event => "event",
            IdKind::Webhook => "webhook",
            IdKind::Delivery => "delivery",
            IdKind::Checkpoint => "checkpoint",
            IdKind::Request => "request",
        }
    }
}

/// Makes a fresh id of the given kind.
pub fn new_id(kind: IdKind) -> String {
    format!("{}_{}", kind.prefix(), ulid::Ulid::generate())
}

/// Whether `s` is well-formed as an id of `kind`: the right prefix and a valid ULID.
/// A well-formed id may still name nothing; that is a 404, not a 400.
pub fn is_valid(kind: IdKind, s: &str) -> bool {
    match s.split_once('_') {
        // As Countersign writes them: upper case, and no larger than a ULID can be (the
        // first character 0–7). A lower-case or overflowing spelling names nothing here.
        Some((prefix, rest)) => {
            prefix == kind.prefix()
                && rest.len() == 26
                && rest.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
                && rest.as_bytes()[0] <= b'7'
                && ulid::Ulid::from_string(rest).is_ok()
        }
        None => false,
    }
}

/// The error for an id that is not even shaped like one of its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedId {
    pub kind: IdKind,
    pub given: String,
}

impl fmt::Display for MalformedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Echo at most a short, printable part of what was given: ids land in logs and
        // terminals, and a client's mistake should not be able to paint either.
        let shown: String = self.given.chars().filter(|c| c.is_ascii_graphic()).take(40).collect();
        write!(
            f,
            "`{shown}` is not {} {} id; {} ids look like {}_01JB9Y6Z3K8Q4W2N7R5T0V1X2Y (upper case)",
            if self.kind.noun().starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" },
            self.kind.noun(),
            self.kind.noun(),
            self.kind.prefix()
        )
    }
}

/// Checks that `s` is a well-formed id of `kind`.
pub fn parse(kind: IdKind, s: &str) -> Result<&str, MalformedId> {
    if is_valid(kind, s) { Ok(s) } else { Err(MalformedId { kind, given: s.to_string() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_spelling_is_an_id() {
        let id = new_id(IdKind::Action);
        assert!(is_valid(IdKind::Action, &id));
        assert!(!is_valid(IdKind::Action, &id.to_lowercase()));
        assert!(!is_valid(IdKind::Action, "act_81M8TRXGPD1QEP5G1VDGS0A2Y6"), "larger than a ULID can be");
    }

    #[test]
    fn ids_carry_their_prefix_and_sort_by_time() {
        let a = new_id(IdKind::Action);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id(IdKind::Action);
        assert!(a.starts_with("act_"));
        assert!(is_valid(IdKind::Action, &a));
        assert!(a < b, "{a} should sort before {b}");
    }

    #[test]
    fn wrong_prefix_or_garbage_is_malformed() {
        let tok = new_id(IdKind::Token);
        assert!(!is_valid(IdKind::Approval, &tok));
        assert!(!is_valid(IdKind::Token, "tok_nope"));
        assert!(!is_valid(IdKind::Token, ""));
        let err = parse(IdKind::Approval, "tok_x\u{1b}[31m").unwrap_err();
        assert!(!err.to_string().contains('\u{1b}'));
    }
}
