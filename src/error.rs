//! The one error type a caller ever sees.
//!
//! Every refusal, from a malformed body to a store that cannot be written, is an
//! [`Error`]: an HTTP status, a stable snake_case `code` that programs match on, and a
//! `message` for a person that says what went wrong and, where it can, what to do. The
//! server renders it as `{"error": {"code", "message"}}`; the command line prints the
//! message. Codes are part of the API contract: add new ones, never rename old ones.

use std::fmt;

use crate::ids::MalformedId;

/// The class of an error, which fixes its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The client did not send the whole request in time.
    RequestTimeout,
    Conflict,
    Gone,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    RateLimited {
        retry_after_secs: u64,
    },
    Unavailable,
    Internal,
}

impl Kind {
    pub const fn status(self) -> u16 {
        match self {
            Kind::BadRequest => 400,
            Kind::Unauthenticated => 401,
            Kind::Forbidden => 403,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed => 405,
            Kind::RequestTimeout => 408,
            Kind::Conflict => 409,
            Kind::Gone => 410,
            Kind::PayloadTooLarge => 413,
            Kind::UnsupportedMediaType => 415,
            Kind::Unprocessable => 422,
            Kind::RateLimited { .. } => 429,
            Kind::Unavailable => 503,
            // A failure inside the server refuses the request like a store that cannot be
            // written: fail closed, and say that a retry is the remedy (the API's statuses
            // are a closed list, and 500 is not on it).
            Kind::Internal => 503,
        }
    }
}

/// A refusal with its status, stable code and human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    /// Every problem found, when a request has several (the rules of a constitution):
    /// rendered as `errors` beside `code` and `message`.
    pub problems: Option<Box<Vec<Problem>>>,
}

/// One of several problems with a request, each with its own stable code: for now, a
/// constitution rule that does not compile (see `crate::constitution::RuleError`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// The rule's id as given.
    pub rule_id: String,
    /// The rule's position in the list, from 0.
    pub index: usize,
    /// 1-based line within the rule's `when`, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column (in characters) within that line.
    pub column: Option<usize>,
    /// Stable, snake_case: `syntax_error`, `unknown_name`, `not_boolean`, `too_costly`, …
    pub code: String,
    /// For a person: names the rule and the position.
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Error { kind, code, message: message.into(), problems: None }
    }
    /// The same error, listing every problem found.
    pub fn with_problems(mut self, problems: Vec<Problem>) -> Self {
        self.problems = Some(Box::new(problems));
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, code, message)
    }
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Unauthenticated, code, message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, code, message)
    }
    /// The one "not found": used alike for a missing id and an id in another workspace.
    pub fn not_found(noun: &str, id: &str) -> Self {
        let shown: String = id.chars().filter(|c| c.is_ascii_graphic()).take(60).collect();
        Self::new(Kind::NotFound, "not_found", format!("no {noun} `{shown}` in this workspace"))
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, code, message)
    }
    pub fn gone(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Gone, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Unprocessable, code, message)
    }
    pub fn rate_limited(retry_after_secs: u64, message: impl Into<String>) -> Self {
        Self::new(Kind::RateLimited { retry_after_secs }, "rate_limited", message)
    }
    /// The store (or something the gate depends on) could not be read or written. The
    /// request was refused, and nothing it asked for happened.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, code, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, "internal_error", message)
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

impl From<MalformedId> for Error {
    fn from(e: MalformedId) -> Self {
        Error::bad_request("invalid_id", e.to_string())
    }
}
