//! Webhooks without I/O: the records the API returns, event-type filters, URL checks,
//! `whsec_` secrets, Standard Webhooks signatures and the retry schedule.
//!
//! The delivery worker is `server::webhooks`; the subscriptions and the outbox are in
//! `store::webhooks`; the outbox rows are written by `store::engine::WriteTx::append`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::audit::AuditEvent;

/// A webhook subscription, as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// `whk_…`
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    pub description: String,
    /// Exact event types (`approval.requested`), families (`approval.*`), or `*`.
    pub event_types: Vec<String>,
    /// Disabled subscriptions receive nothing; nothing is queued for them.
    pub enabled: bool,
    /// Why Countersign disabled it (the receiver answered `410 Gone`), if it did.
    pub disabled_reason: Option<String>,
    /// When the secret was last rotated.
    pub secret_rotated_at: Option<String>,
    /// Until when the secret before the last rotation still signs deliveries.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Queued, not attempted yet (or queued again by hand).
    Pending,
    /// Attempted and refused or unreachable; another attempt is scheduled.
    Retrying,
    /// A receiver answered 2xx.
    Delivered,
    /// Given up: the retry schedule ran out, the receiver answered 410, or the
    /// subscription was disabled. Redeliver by hand to try again.
    Failed,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "retrying" => Some(DeliveryStatus::Retrying),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One event on its way to one subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// `dlv_…`: the `webhook-id` header, the same on every attempt.
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_seq: i64,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: i64,
    /// The HTTP status of the last answer, if there was one.
    pub last_status_code: Option<u16>,
    /// What went wrong on the last attempt, for a person.
    pub last_error: Option<String>,
    pub last_attempt_at: Option<String>,
    /// When the next attempt is due, while one is.
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a receiver gets: the Standard Webhooks envelope around the audit event,
/// exactly as `GET /v1/audit` returns it.
#[derive(Serialize)]
pub struct Payload<'a> {
    /// The event type, e.g. `approval.requested`.
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// The event's time (RFC 3339, UTC).
    pub timestamp: &'a str,
    pub data: &'a AuditEvent,
}

impl<'a> Payload<'a> {
    pub fn new(event: &'a AuditEvent) -> Self {
        Payload { event_type: &event.event_type, timestamp: &event.ts, data: event }
    }
}

// --- filters -------------------------------------------------------------------------

/// The most filters one subscription may have.
pub const MAX_FILTERS: usize = 64;
const MAX_FILTER_LEN: usize = 100;

/// Whether `f` is a filter: `*`, an event type such as `approval.requested`, or a family
/// such as `approval.*` (dot-separated lower-case words of `a-z`, `0-9`, `_`).
pub fn valid_filter(f: &str) -> bool {
    if f == "*" {
        return true;
    }
    if f.is_empty() || f.len() > MAX_FILTER_LEN {
        return false;
    }
    let base = f.strip_suffix(".*").unwrap_or(f);
    !base.is_empty()
        && base.split('.').all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
}

/// Whether an event of `event_type` passes any of `filters`.
pub fn matches(filters: &[String], event_type: &str) -> bool {
    filters.iter().any(|f| {
        if f == "*" {
            return true;
        }
        match f.strip_suffix('*') {
            // `approval.*`: the family prefix, dot included.
            Some(prefix) => event_type.starts_with(prefix),
            None => f == event_type,
        }
    })
}

// --- URLs ----------------------------------------------------------------------------

/// Checks a receiver URL and returns it normalised, or says what is wrong: the rule of
/// every URL Countersign calls ([`crate::call_url`]).
///
/// Loopback and private addresses are allowed on purpose: the tools and chat bridges
/// that receive webhooks often run beside Countersign. Redirects are never followed.
pub fn check_url(url: &str) -> Result<String, String> {
    crate::call_url::check("url", url, "receivers authenticate deliveries by their signature").map(|u| u.to_string())
}

// --- secrets and signatures ------------------------------------------------------------

/// The prefix of a Standard Webhooks signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    crate::secrets::random_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// The HMAC key of a secret: the base64-decoded part after `whsec_`.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok().filter(|k| !k.is_empty())
}

/// One signature: `v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per secret, space-separated (the
/// current secret first, then the one still in its grace period).
pub fn signature_header(keys: &[Vec<u8>], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter().map(|k| sign(k, msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

// --- the retry schedule ------------------------------------------------------------------

/// Seconds to wait after the 1st, 2nd, … failed attempt before the next one. Each is
/// jittered by ±20%. After the last, the delivery is given up (`failed`): 12 attempts
/// spread over about 31.7 hours, and never less than 25 hours even with the jitter.
pub const RETRY_DELAYS: [i64; 11] = [5, 30, 120, 600, 1800, 3600, 7200, 14_400, 28_800, 28_800, 28_800];

/// Attempts made before a delivery is given up.
pub const MAX_ATTEMPTS: i64 = RETRY_DELAYS.len() as i64 + 1;

/// The share of each delay that jitter may add or take away.
pub const JITTER: f64 = 0.2;

/// The wait after the `failures`-th failed attempt (counting from 1 since the schedule
/// started), given a uniform random `unit` in [0, 1); `None` once the schedule has run out.
pub fn retry_delay(failures: i64, unit: f64) -> Option<chrono::Duration> {
    let base = *RETRY_DELAYS.get(usize::try_from(failures.checked_sub(1)?).ok()?)?;
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0);
    Some(chrono::Duration::milliseconds((base as f64 * 1000.0 * factor).round() as i64))
}

/// A uniform random number in [0, 1), for jitter.
pub fn jitter_unit() -> f64 {
    let mut b = [0u8; 4];
    crate::secrets::random_bytes(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["*", "approval.*", "approval.requested", "action.execution_refused", "a.b.c", "a.b.*", "token"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", ".*", "*.x", "approval.", ".approval", "a..b", "Approval.requested", "a.*.b", "a*", "a b", "a.**"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        let f = vec!["approval.*".to_string(), "killswitch.engaged".to_string()];
        assert!(matches(&f, "approval.requested"));
        assert!(matches(&f, "killswitch.engaged"));
        assert!(!matches(&f, "killswitch.lifted"));
        assert!(!matches(&f, "approvals.requested"), "a family ends at its dot");
        assert!(matches(&["*".to_string()], "anything.at_all"));
        assert!(!matches(&[], "approval.requested"));
    }

    #[test]
    fn secrets_are_whsec_and_32_bytes() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, generate_secret());
        assert!(secret_key("nope").is_none());
        assert!(secret_key("whsec_!!!").is_none());
    }

    /// The example from the Standard Webhooks specification's reference libraries.
    #[test]
    fn signature_matches_the_specification_example() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = signature_header(&[key.clone(), vec![1, 2, 3]], "m", 1, b"{}");
        let parts: Vec<_> = two.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign(&key, "m", 1, b"{}"));
    }

    #[test]
    fn the_schedule_lasts_more_than_a_day_even_with_jitter() {
        let total = |unit: f64| (1..MAX_ATTEMPTS).map(|n| retry_delay(n, unit).unwrap().num_seconds()).sum::<i64>();
        assert!(total(0.0) >= 24 * 3600, "shortest: {} s", total(0.0));
        assert!(total(0.999) <= 40 * 3600);
        assert_eq!(retry_delay(MAX_ATTEMPTS, 0.5), None);
        assert_eq!(retry_delay(0, 0.5), None);
        assert_eq!(retry_delay(1, 0.5).unwrap().num_seconds(), 5);
        let d = retry_delay(1, 0.0).unwrap().num_milliseconds();
        assert_eq!(d, 4000);
        let u = jitter_unit();
        assert!((0.0..1.0).contains(&u));
    }
}
