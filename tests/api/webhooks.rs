//! Webhooks against a real local receiver: Standard Webhooks signatures checked by an
//! implementation of the specification's algorithm written here (not the code under
//! test), filters, retries with backoff (time moved, not slept), 410 Gone, secret
//! rotation with a grace period, the outbox across a restart, redelivery by hand,
//! secrets kept out of every response and the audit log, and who may do what.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use countersign::server::ServerConfig;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::*;

// --- an independent verifier ------------------------------------------------------------

/// The Standard Webhooks signature of a message, computed from the specification: the
/// key is the base64-decoded part of the secret after `whsec_`; the signed content is
/// `{webhook-id}.{webhook-timestamp}.{body}`; the signature is `v1,` + base64(HMAC-SHA256).
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &str) -> String {
    let key = B64.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).expect("base64 secret");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Whether any of the space-separated signatures in the header was made with `secret`.
fn signed_with(secret: &str, got: &Got) -> bool {
    let expected = expected_signature(secret, &got.id, &got.timestamp, &got.body);
    got.signature.split(' ').any(|s| s == expected)
}

// --- a receiver ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    Status(u16),
    /// Never answers (within the test).
    Hang,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: String,
    reply: Reply,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }
    fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap().to_string()
    }
    fn event_id(&self) -> String {
        self.json()["data"]["id"].as_str().unwrap().to_string()
    }
}

struct Script {
    got: Vec<Got>,
    next: VecDeque<Reply>,
    default: Reply,
}

/// A receiver on 127.0.0.1 that answers from a script, then with a default.
#[derive(Clone)]
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(default: Reply) -> Receiver {
        let script = Arc::new(Mutex::new(Script { got: Vec::new(), next: VecDeque::new(), default }));
        async fn hook(State(s): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: String) -> StatusCode {
            let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let reply = {
                let mut s = s.lock().unwrap();
                let reply = s.next.pop_front().unwrap_or(s.default);
                s.got.push(Got {
                    id: h("webhook-id"),
                    timestamp: h("webhook-timestamp"),
                    signature: h("webhook-signature"),
                    content_type: h("content-type"),
                    body,
                    reply,
                });
                reply
            };
            match reply {
                Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
                Reply::Hang => {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    StatusCode::OK
                }
            }
        }
        let app = axum::Router::new().route("/hook", post(hook)).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, script }
    }

    /// Answers the next requests with `replies`, in order.
    fn then(&self, replies: &[Reply]) {
        self.script.lock().unwrap().next.extend(replies.iter().copied());
    }

    fn answer(&self, default: Reply) {
        self.script.lock().unwrap().default = default;
    }

    fn got(&self) -> Vec<Got> {
        self.script.lock().unwrap().got.clone()
    }
}

// --- helpers ---------------------------------------------------------------------------------

/// A server whose webhook worker looks for due deliveries every 50 ms, and whose
/// sign-ins outlast the days these tests move the clock by.
fn fast() -> ServerConfig {
    ServerConfig {
        webhook_poll_interval: Duration::from_millis(50),
        session_ttl: Duration::from_secs(30 * 24 * 3600),
        ..ServerConfig::default()
    }
}

/// Polls `check` until it yields, or fails after 10 seconds saying what was awaited.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the receiver has got `n` requests; returns them.
async fn received(r: &Receiver, n: usize) -> Vec<Got> {
    eventually(&format!("{n} request(s) at {}", r.url), || async {
        let got = r.got();
        (got.len() >= n).then_some(got)
    })
    .await
}

/// Creates a subscription; returns its id and secret.
async fn subscribe(api: &Api, url: &str, types: &[&str]) -> (String, String) {
    let r = api.post("/v1/webhooks", json!({"url": url, "event_types": types})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    (r.body["id"].as_str().unwrap().to_string(), r.body["secret"].as_str().unwrap().to_string())
}

async fn deliveries(api: &Api, hook: &str) -> Vec<Value> {
    let r = api.get(&format!("/v1/webhooks/{hook}/deliveries")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

/// Waits until the subscription's only (or newest) delivery satisfies `pred`; returns it.
async fn delivery_where(api: &Api, hook: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eventually(what, || async { deliveries(api, hook).await.into_iter().next().filter(|d| pred(d)) }).await
}

async fn switch(api: &Api, engaged: bool) {
    let r = api.put("/v1/killswitches/workspace", json!({"engaged": engaged, "reason": "webhook test"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a timestamp, not {v}"))).unwrap().to_utc()
}

// --- tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_are_signed_per_the_specification_and_filtered() {
    let server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let rx = Receiver::start(Reply::Status(200)).await;
    let (hook, secret) = subscribe(&ws.owner, &rx.url, &["killswitch.*", "tool.created"]).await;

    ws.record_tool("crm.read", "read", "auto", false).await; // tool.created: matches
    let r = submit(&ws.owner, "crm.read", json!({"q": 1})).await; // action.*: does not
    assert_eq!(r.body["status"], "executed", "{}", r.body);
    switch(&ws.owner, true).await; // killswitch.engaged: matches

    // The outbox is written with each event: what is queued is known now.
    let queued = deliveries(&ws.owner, &hook).await;
    assert_eq!(queued.len(), 2, "only the matching events are queued: {queued:?}");

    let got = received(&rx, 2).await;
    let events = ws.owner.all_events().await;
    let now = chrono::Utc::now().timestamp();
    for g in &got {
        assert!(signed_with(&secret, g), "signature {} does not verify", g.signature);
        assert!(g.id.starts_with("dlv_"), "{}", g.id);
        assert_eq!(g.content_type, "application/json");
        let t: i64 = g.timestamp.parse().expect("unix seconds");
        assert!((t - now).abs() < 300, "webhook-timestamp {t} is not now ({now})");
        assert!(!signed_with("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", g), "another secret does not verify");
        // The payload: the Standard Webhooks envelope around the audit event, as stored.
        let body = g.json();
        let stored = events.iter().find(|e| e["id"] == body["data"]["id"]).expect("the delivered event is in the log");
        assert_eq!(&body["data"], stored);
        assert_eq!(body["type"], stored["event_type"]);
        assert_eq!(body["timestamp"], stored["ts"]);
    }
    let types: BTreeSet<String> = got.iter().map(Got::event_type).collect();
    assert_eq!(types, BTreeSet::from(["killswitch.engaged".to_string(), "tool.created".to_string()]));
    // Tampering with the body or the timestamp breaks the signature.
    let mut tampered = got[0].clone();
    tampered.body.push(' ');
    assert!(!signed_with(&secret, &tampered));
    let mut replayed = got[0].clone();
    replayed.timestamp = (now + 3600).to_string();
    assert!(!signed_with(&secret, &replayed));

    let listed = eventually("both deliveries recorded as delivered", || async {
        let d = deliveries(&ws.owner, &hook).await;
        d.iter().all(|d| d["status"] == "delivered").then_some(d)
    })
    .await;
    for d in &listed {
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_status_code"], 200);
        assert!(d["next_attempt_at"].is_null());
        assert!(d["delivered_at"].is_string());
        assert!(got.iter().any(|g| g.id == d["id"].as_str().unwrap()), "the webhook-id is the delivery's id");
        let e = events.iter().find(|e| e["id"] == d["event_id"]).unwrap();
        assert_eq!((&d["event_seq"], &d["event_type"]), (&e["seq"], &e["event_type"]));
    }
    // Filtered by status.
    let r = ws.owner.get(&format!("/v1/webhooks/{hook}/deliveries?status=failed&limit=10")).await;
    assert_eq!((r.status, r.body["items"].as_array().map(Vec::len)), (200, Some(0)), "{}", r.body);
    let r = ws.owner.get(&format!("/v1/webhooks/{hook}/deliveries?status=lost")).await;
    assert_eq!((r.status, r.code()), (400, "invalid_query"));
    let r = ws.owner.get(&format!("/v1/webhooks/{hook}/deliveries?limit=0")).await;
    assert_eq!((r.status, r.code()), (400, "invalid_query"));
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_are_validated_and_the_secret_is_shown_once() {
    let server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let bad: &[(Value, &str)] = &[
        (json!({"url": "ftp://example.com/x", "event_types": ["*"]}), "invalid_url"),
        (json!({"url": "https://user:pass@example.com/x", "event_types": ["*"]}), "invalid_url"),
        (json!({"url": "not a url", "event_types": ["*"]}), "invalid_url"),
        (json!({"url": "https://example.com/#frag", "event_types": ["*"]}), "invalid_url"),
        // A credential in the URL would be in the audit log and in other subscribers' events.
        (json!({"url": "https://example.com/hook?token=abc", "event_types": ["*"]}), "invalid_url"),
        (json!({"url": "http:///hook", "event_types": ["*"]}), "invalid_url"),
        (json!({"url": "https://example.com/", "event_types": []}), "invalid_event_types"),
        (json!({"url": "https://example.com/", "event_types": ["Approval.*"]}), "invalid_event_types"),
        (json!({"url": "https://example.com/", "event_types": ["approval.*.x"]}), "invalid_event_types"),
        (json!({"url": "https://example.com/", "event_types": ["approval..requested"]}), "invalid_event_types"),
        // Well formed, but no event is ever of these: a subscription that would never fire.
        (json!({"url": "https://example.com/", "event_types": ["approval.requsted"]}), "invalid_event_types"),
        (json!({"url": "https://example.com/", "event_types": ["action"]}), "invalid_event_types"),
        (json!({"url": "https://example.com/", "event_types": ["actions.*"]}), "invalid_event_types"),
        (json!({"url": "https://example.com/", "event_types": ["*"], "description": "a\u{7}b"}), "invalid_description"),
        (json!({"url": "https://example.com/", "event_types": ["*"], "secret": "whsec_mine"}), "invalid_field"),
        (json!({"url": "https://example.com/"}), "invalid_field"),
    ];
    for (body, code) in bad {
        let r = ws.owner.post("/v1/webhooks", body.clone()).await;
        assert_eq!((r.status, r.code()), (422, *code), "{body}: {}", r.body);
    }
    let r = ws.owner.raw("POST", "/v1/webhooks", b"{\"url\":").await;
    assert_eq!(r.status, 400);

    let r = ws
        .owner
        .post(
            "/v1/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["tool.*", "approval.requested", "tool.*"], "description": "ops bridge"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let secret = r.body["secret"].as_str().unwrap().to_string();
    assert!(id.starts_with("whk_"));
    assert!(secret.starts_with("whsec_"));
    assert_eq!(B64.decode(&secret["whsec_".len()..]).unwrap().len(), 32, "32 random bytes");
    assert_eq!(r.body["event_types"], json!(["approval.requested", "tool.*"]));
    assert_eq!(r.body["enabled"], true);
    assert_eq!(r.body["description"], "ops bridge");
    let key_part = &secret["whsec_".len()..];

    // Never again: not listed, not fetched, not in the log, not in the database file.
    let list = ws.owner.get("/v1/webhooks").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let one = ws.owner.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(one.status, 200);
    for text in [&list.text, &one.text] {
        assert!(!text.contains(key_part), "{text}");
        assert!(!text.contains("\"secret\""), "{text}");
    }
    let events = ws.owner.all_events().await;
    let created = events.iter().find(|e| e["event_type"] == "webhook.created").expect("webhook.created is audited");
    assert_eq!(created["resource"], format!("webhook:{id}"));
    assert_eq!(created["data"]["webhook"]["url"], "http://127.0.0.1:9/hook");
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(key_part), "the audit log holds the secret");
    assert!(!server.store_holds(key_part, &["webhooks", "webhook_deliveries", "audit_events"]), "the store holds the secret in the clear");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_receiver_is_retried_with_backoff_until_it_accepts() {
    let server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let rx = Receiver::start(Reply::Status(200)).await;
    rx.then(&[Reply::Status(500), Reply::Status(503)]);
    let (hook, secret) = subscribe(&ws.owner, &rx.url, &["killswitch.*"]).await;
    switch(&ws.owner, true).await;

    let first = delivery_where(&ws.owner, &hook, "a first failed attempt", |d| d["attempts"] == 1).await;
    assert_eq!(first["status"], "retrying");
    assert_eq!(first["last_status_code"], 500);
    assert!(first["last_error"].as_str().unwrap().contains("500"), "{first}");
    let wait = ts(&first["next_attempt_at"]) - ts(&first["last_attempt_at"]);
    assert!((4_000..=6_000).contains(&wait.num_milliseconds()), "first retry after 5 s ± 20%: {wait}");

    server.clock.advance(chrono::Duration::seconds(7));
    let second = delivery_where(&ws.owner, &hook, "a second failed attempt", |d| d["attempts"] == 2).await;
    assert_eq!((&second["status"], &second["last_status_code"]), (&json!("retrying"), &json!(503)));
    let wait = ts(&second["next_attempt_at"]) - ts(&second["last_attempt_at"]);
    assert!((24_000..=36_000).contains(&wait.num_milliseconds()), "second retry after 30 s ± 20%: {wait}");

    server.clock.advance(chrono::Duration::seconds(40));
    let done = delivery_where(&ws.owner, &hook, "delivery on the third attempt", |d| d["status"] == "delivered").await;
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["last_status_code"], 200);
    assert!(done["last_error"].is_null());

    let got = received(&rx, 3).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.id == done["id"].as_str().unwrap()), "every attempt carries the same webhook-id");
    assert!(got.iter().all(|g| signed_with(&secret, g)));
    assert!(got.iter().all(|g| g.body == got[0].body), "the same payload each time");
    let stamps: Vec<i64> = got.iter().map(|g| g.timestamp.parse().unwrap()).collect();
    assert!(stamps[2] - stamps[0] >= 47, "each attempt is stamped with its own time: {stamps:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_are_given_up_after_more_than_a_day_and_can_be_redelivered_by_hand() {
    let server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let rx = Receiver::start(Reply::Status(500)).await;
    let (hook, secret) = subscribe(&ws.owner, &rx.url, &["killswitch.engaged"]).await;
    let marker = Receiver::start(Reply::Status(200)).await;
    subscribe(&ws.owner, &marker.url, &["killswitch.lifted"]).await;
    switch(&ws.owner, true).await;

    for n in 1..=12 {
        // (At least: the first retries come due in seconds of real time too.)
        let d = delivery_where(&ws.owner, &hook, &format!("attempt {n}"), |d| d["attempts"].as_i64() >= Some(n)).await;
        if n < 12 {
            assert_eq!(d["status"], "retrying", "after attempt {n}: {d}");
            server.clock.advance(chrono::Duration::hours(10));
        } else {
            assert_eq!(d["status"], "failed", "{d}");
            assert!(d["next_attempt_at"].is_null());
            assert!(d["last_error"].as_str().unwrap().contains("gave up after 12 attempts"), "{d}");
        }
    }
    let got = received(&rx, 12).await;
    let first: i64 = got[0].timestamp.parse().unwrap();
    let last: i64 = got[11].timestamp.parse().unwrap();
    assert!(last - first >= 24 * 3600, "retried for at least a day: {} s", last - first);
    assert!(got.iter().all(|g| signed_with(&secret, g)));

    // Nothing more is attempted, however much time passes: a later event that reaches
    // the other subscription proves the worker ran meanwhile.
    server.clock.advance(chrono::Duration::hours(30));
    switch(&ws.owner, false).await;
    received(&marker, 1).await;
    assert_eq!(rx.got().len(), 12);

    // By hand: a fresh attempt now, the same webhook-id, the schedule restarted.
    rx.answer(Reply::Status(204));
    let id = got[0].id.clone();
    let r = ws.owner.post_empty(&format!("/v1/webhooks/{hook}/deliveries/{id}/redeliver")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "pending");
    let done = delivery_where(&ws.owner, &hook, "the redelivery", |d| d["status"] == "delivered").await;
    assert_eq!((&done["attempts"], &done["last_status_code"]), (&json!(13), &json!(204)));
    let again = received(&rx, 13).await;
    assert_eq!(again[12].id, id);
    assert!(signed_with(&secret, &again[12]));
    let events = ws.owner.all_events().await;
    let audited = events.iter().find(|e| e["event_type"] == "webhook.redelivered").expect("redelivery is audited");
    assert_eq!(audited["data"]["delivery_id"], id);

    // A delivered delivery may be sent again too.
    let r = ws.owner.post_empty(&format!("/v1/webhooks/{hook}/deliveries/{id}/redeliver")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    delivery_where(&ws.owner, &hook, "the second redelivery", |d| d["attempts"] == 14 && d["status"] == "delivered").await;
    assert_eq!(rx.got().len(), 14);

    // Unknown, malformed, or another subscription's.
    let missing = countersign::ids::new_id(countersign::ids::IdKind::Delivery);
    let r = ws.owner.post_empty(&format!("/v1/webhooks/{hook}/deliveries/{missing}/redeliver")).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = ws.owner.post_empty(&format!("/v1/webhooks/{hook}/deliveries/nope/redeliver")).await;
    assert_eq!((r.status, r.code()), (400, "invalid_id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn gone_disables_the_subscription_at_once() {
    let server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let gone = Receiver::start(Reply::Status(410)).await;
    let watcher = Receiver::start(Reply::Status(200)).await;
    let (hook, _) = subscribe(&ws.owner, &gone.url, &["killswitch.*"]).await;
    subscribe(&ws.owner, &watcher.url, &["killswitch.*", "webhook.disabled"]).await;

    switch(&ws.owner, true).await;
    let d = delivery_where(&ws.owner, &hook, "the 410", |d| d["attempts"] == 1).await;
    assert_eq!((&d["status"], &d["last_status_code"]), (&json!("failed"), &json!(410)), "{d}");
    assert!(d["next_attempt_at"].is_null());
    let w = ws.owner.get(&format!("/v1/webhooks/{hook}")).await;
    assert_eq!(w.body["enabled"], false, "{}", w.body);
    assert!(w.body["disabled_reason"].as_str().unwrap().contains("410"));

    // Audited, by the system, and itself an event others can subscribe to.
    let events = ws.owner.all_events().await;
    let disabled = events.iter().find(|e| e["event_type"] == "webhook.disabled").expect("webhook.disabled is audited");
    assert_eq!(disabled["resource"], format!("webhook:{hook}"));
    assert_eq!(disabled["actor"]["kind"], "system");
    let seen = received(&watcher, 2).await;
    assert!(seen.iter().any(|g| g.event_type() == "webhook.disabled"));

    // Nothing more is queued or sent to it; the other subscription proves events flowed.
    switch(&ws.owner, false).await;
    eventually("the lift to reach the other receiver", || async {
        watcher.got().iter().any(|g| g.event_type() == "killswitch.lifted").then_some(())
    })
    .await;
    assert_eq!(gone.got().len(), 1);
    assert_eq!(deliveries(&ws.owner, &hook).await.len(), 1);

    // Enabling it again is a person's decision, and clears the reason.
    let r = ws.owner.patch(&format!("/v1/webhooks/{hook}"), json!({"enabled": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((&r.body["enabled"], &r.body["disabled_reason"]), (&json!(true), &Value::Null));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_keeps_signing_through_its_grace_period_only() {
    let server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let rx = Receiver::start(Reply::Status(200)).await;
    let (hook, old) = subscribe(&ws.owner, &rx.url, &["killswitch.*"]).await;

    let r = ws.owner.post_empty(&format!("/v1/webhooks/{hook}/rotate-secret")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.body["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != old);
    let grace = ts(&r.body["previous_secret_expires_at"]) - server.clock.now();
    assert!((grace.num_minutes() - 24 * 60).abs() <= 1, "a day's grace by default: {grace}");

    switch(&ws.owner, true).await;
    let got = received(&rx, 1).await;
    let sigs: Vec<&str> = got[0].signature.split(' ').collect();
    assert_eq!(sigs.len(), 2, "two signatures during the grace period: {}", got[0].signature);
    assert_eq!(sigs[0], expected_signature(&new, &got[0].id, &got[0].timestamp, &got[0].body));
    assert_eq!(sigs[1], expected_signature(&old, &got[0].id, &got[0].timestamp, &got[0].body));

    server.clock.advance(chrono::Duration::hours(24) + chrono::Duration::minutes(1));
    switch(&ws.owner, false).await;
    let got = received(&rx, 2).await;
    assert!(!got[1].signature.contains(' '), "one signature after the grace period: {}", got[1].signature);
    assert!(signed_with(&new, &got[1]));
    assert!(!signed_with(&old, &got[1]));
    let w = ws.owner.get(&format!("/v1/webhooks/{hook}")).await;
    assert!(w.body["previous_secret_expires_at"].is_null(), "{}", w.body);

    // No grace: the old secret stops at once.
    let r = ws.owner.post(&format!("/v1/webhooks/{hook}/rotate-secret"), json!({"grace_seconds": 0})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let newest = r.body["secret"].as_str().unwrap().to_string();
    switch(&ws.owner, true).await;
    let got = received(&rx, 3).await;
    assert!(signed_with(&newest, &got[2]) && !signed_with(&new, &got[2]), "{}", got[2].signature);

    for (body, code) in [
        (json!({"grace_seconds": -1}), "invalid_grace"),
        (json!({"grace_seconds": 604_801}), "invalid_grace"),
        (json!({"grace": 5}), "invalid_field"),
    ] {
        let r = ws.owner.post(&format!("/v1/webhooks/{hook}/rotate-secret"), body.clone()).await;
        assert_eq!((r.status, r.code()), (422, code), "{body}: {}", r.body);
    }

    // Audited without any secret.
    let events = ws.owner.all_events().await;
    assert_eq!(events.iter().filter(|e| e["event_type"] == "webhook.secret_rotated").count(), 2);
    let log = serde_json::to_string(&events).unwrap();
    for s in [&old, &new, &newest] {
        assert!(!log.contains(&s["whsec_".len()..]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_survives_a_restart_mid_delivery() {
    let mut server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    // One receiver hangs on its first request (in flight at shutdown); one is down.
    let hung = Receiver::start(Reply::Status(200)).await;
    hung.then(&[Reply::Hang]);
    let down = Receiver::start(Reply::Status(500)).await;
    let (hung_hook, hung_secret) = subscribe(&ws.owner, &hung.url, &["killswitch.*"]).await;
    let (down_hook, down_secret) = subscribe(&ws.owner, &down.url, &["killswitch.*"]).await;

    switch(&ws.owner, true).await;
    received(&hung, 1).await;
    delivery_where(&ws.owner, &down_hook, "a failed attempt", |d| d["status"] == "retrying").await;
    // The gate does not wait for receivers: it decides (here: the switch blocks) at once.
    let r = tokio::time::timeout(Duration::from_secs(5), submit(&ws.owner, "crm.read", json!({}))).await.expect("the gate answers");
    assert_eq!((&r.body["status"], &r.body["code"]), (&json!("blocked"), &json!("workspace_kill_switch")), "{}", r.body);

    server.stop().await;
    down.answer(Reply::Status(200));
    server.restart().await;
    let owner = server.sign_in("owner@acme.test").await;
    // More events after the restart, into the same outbox.
    switch(&owner, false).await;

    // The abandoned attempt is due again at once; the failed one when its retry comes.
    received(&hung, 3).await;
    server.clock.advance(chrono::Duration::seconds(10));
    received(&down, 3).await;
    for hook in [&hung_hook, &down_hook] {
        eventually("everything delivered", || async {
            let d = deliveries(&owner, hook).await;
            (d.len() == 2 && d.iter().all(|d| d["status"] == "delivered")).then_some(())
        })
        .await;
    }

    // No event lost, none sent under two webhook-ids, each accepted exactly once.
    let expected: BTreeSet<String> = owner
        .all_events()
        .await
        .iter()
        .filter(|e| e["event_type"].as_str().unwrap().starts_with("killswitch."))
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 2);
    for (rx, secret) in [(&hung, &hung_secret), (&down, &down_secret)] {
        let got = rx.got();
        let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
        for g in &got {
            assert!(signed_with(secret, g));
            ids.entry(g.event_id()).or_default().insert(g.id.clone());
            if g.reply == Reply::Status(200) {
                *accepted.entry(g.event_id()).or_default() += 1;
            }
        }
        assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), expected, "every event reached {}", rx.url);
        assert!(ids.values().all(|s| s.len() == 1), "one webhook-id per event: {ids:?}");
        assert!(accepted.values().all(|n| *n == 1) && accepted.len() == 2, "each accepted once: {accepted:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_receiver_times_out_and_is_retried() {
    let config = ServerConfig { webhook_timeout: Duration::from_millis(300), ..fast() };
    let server = TestServer::start_with(config).await;
    let ws = server.workspace("acme").await;
    let rx = Receiver::start(Reply::Status(200)).await;
    rx.then(&[Reply::Hang]);
    let (hook, _) = subscribe(&ws.owner, &rx.url, &["killswitch.*"]).await;
    switch(&ws.owner, true).await;
    let d = delivery_where(&ws.owner, &hook, "the timed-out attempt", |d| d["attempts"] == 1).await;
    assert_eq!(d["status"], "retrying");
    assert!(d["last_status_code"].is_null());
    assert!(d["last_error"].as_str().unwrap().contains("no answer within 300 ms"), "{d}");
    server.clock.advance(chrono::Duration::seconds(7));
    delivery_where(&ws.owner, &hook, "delivery on the retry", |d| d["status"] == "delivered").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_are_audited_and_disabled_or_deleted_subscriptions_get_nothing() {
    let server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let first = Receiver::start(Reply::Status(200)).await;
    let second = Receiver::start(Reply::Status(200)).await;
    let (hook, secret) = subscribe(&ws.owner, &first.url, &["killswitch.engaged"]).await;
    let path = format!("/v1/webhooks/{hook}");

    for (body, code) in [
        (json!({"url": "gopher://x"}), "invalid_url"),
        (json!({"event_types": []}), "invalid_event_types"),
        (json!({"enabled": "yes"}), "invalid_field"),
    ] {
        let r = ws.owner.patch(&path, body.clone()).await;
        assert_eq!((r.status, r.code()), (422, code), "{body}: {}", r.body);
    }

    let r = ws.owner.patch(&path, json!({"enabled": false, "description": "paused"})).await;
    assert_eq!((r.status, &r.body["enabled"]), (200, &json!(false)), "{}", r.body);
    switch(&ws.owner, true).await;
    switch(&ws.owner, false).await;
    assert!(deliveries(&ws.owner, &hook).await.is_empty(), "nothing is queued for a disabled subscription");

    let r = ws.owner.patch(&path, json!({"enabled": true, "url": second.url, "event_types": ["killswitch.lifted"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["url"], second.url.as_str());
    switch(&ws.owner, true).await;
    switch(&ws.owner, false).await;
    let got = received(&second, 1).await;
    assert_eq!(got[0].event_type(), "killswitch.lifted");
    assert!(signed_with(&secret, &got[0]), "the secret survives a change of URL");
    assert!(first.got().is_empty());

    let events = ws.owner.all_events().await;
    let updates: Vec<&Value> = events.iter().filter(|e| e["event_type"] == "webhook.updated").collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["data"]["before"]["enabled"], true);
    assert_eq!(updates[0]["data"]["after"]["enabled"], false);
    assert_eq!(updates[1]["data"]["after"]["url"], second.url.as_str());

    let r = ws.owner.delete(&path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ws.owner.get(&path).await.status, 404);
    assert_eq!(ws.owner.get(&format!("{path}/deliveries")).await.status, 404);
    switch(&ws.owner, true).await;
    let events = ws.owner.all_events().await;
    let deleted = events.iter().find(|e| e["event_type"] == "webhook.deleted").expect("deletion is audited");
    assert_eq!(deleted["data"]["webhook"]["id"], hook.as_str());
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(&secret["whsec_".len()..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_webhook_managers_of_the_same_workspace_reach_a_subscription() {
    let server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let other = server.workspace("globex").await;
    let (hook, _) = subscribe(&ws.owner, "http://127.0.0.1:9/hook", &["*"]).await;
    let delivery = deliveries(&ws.owner, &hook).await[0]["id"].as_str().unwrap().to_string(); // its own webhook.created
    let (_, viewer) = ws.member(&server, "viewer").await;
    let (_, member) = ws.member(&server, "member").await;
    let (_, admin) = ws.member(&server, "admin").await;

    let calls = |api: Api| {
        let (hook, delivery) = (hook.clone(), delivery.clone());
        async move {
            vec![
                api.get("/v1/webhooks").await,
                api.post("/v1/webhooks", json!({"url": "https://example.com/", "event_types": ["*"]})).await,
                api.get(&format!("/v1/webhooks/{hook}")).await,
                api.patch(&format!("/v1/webhooks/{hook}"), json!({"description": "x"})).await,
                api.post_empty(&format!("/v1/webhooks/{hook}/rotate-secret")).await,
                api.get(&format!("/v1/webhooks/{hook}/deliveries")).await,
                api.post_empty(&format!("/v1/webhooks/{hook}/deliveries/{delivery}/redeliver")).await,
                api.delete(&format!("/v1/webhooks/{hook}")).await,
            ]
        }
    };
    for (who, api) in [("viewer", viewer), ("member", member)] {
        for r in calls(api).await {
            assert_eq!((r.status, r.code()), (403, "permission_denied"), "{who}: {}", r.body);
        }
    }
    // Another workspace's owner: the id does not exist for them.
    let theirs = calls(other.owner.clone()).await;
    assert_eq!(theirs[0].status, 200);
    assert_eq!(theirs[0].body["items"], json!([]), "another workspace's subscriptions are not listed");
    assert_eq!(theirs[1].status, 201, "they may make their own");
    for r in &theirs[2..] {
        assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
    }
    // An admin holds webhooks:manage.
    let r = admin.get(&format!("/v1/webhooks/{hook}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = admin.get("/v1/webhooks/tok_01JB9Y6Z3K8Q4W2N7R5T0V1X2Y").await;
    assert_eq!((r.status, r.code()), (400, "invalid_id"));
    assert_eq!(server.anon().get("/v1/webhooks").await.status, 401);

    // Described in the OpenAPI document.
    let doc = server.anon().get("/v1/openapi.json").await;
    for p in [
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/rotate-secret",
        "/v1/webhooks/{id}/deliveries",
        "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
    ] {
        assert!(doc.body["paths"][p].is_object(), "{p} is not in the OpenAPI document");
    }
    let rotate = &doc.body["paths"]["/v1/webhooks/{id}/rotate-secret"]["post"]["requestBody"];
    assert_ne!(rotate["required"], true, "the rotation body is optional: {rotate}");
}

#[tokio::test(flavor = "multi_thread")]
async fn master_key_rotation_keeps_webhook_secrets() {
    let mut server = TestServer::start_with(fast()).await;
    let ws = server.workspace("acme").await;
    let rx = Receiver::start(Reply::Status(200)).await;
    let (hook, secret) = subscribe(&ws.owner, &rx.url, &["killswitch.*"]).await;
    let r = ws.owner.post(&format!("/v1/webhooks/{hook}/rotate-secret"), json!({"grace_seconds": 3600})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = r.body["secret"].as_str().unwrap().to_string();
    server.stop().await;

    let new_key = server.dir.join("new.key");
    assert!(bin_command(None).args(["admin", "generate-master-key", "--out"]).arg(&new_key).status().unwrap().success());
    let out = bin_command(server.db.as_ref())
        .args(["admin", "rotate-master-key", "--data-dir"])
        .arg(&server.dir)
        .arg("--new-key-file")
        .arg(&new_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Re-sealed the signing secrets of 1 webhook(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::rename(&new_key, server.dir.join("master.key")).unwrap();

    server.restart().await;
    let owner = server.sign_in("owner@acme.test").await;
    switch(&owner, true).await;
    let got = received(&rx, 1).await;
    assert!(signed_with(&rotated, &got[0]) && signed_with(&secret, &got[0]), "both secrets still sign: {}", got[0].signature);
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_deliveries_are_forgotten_after_their_retention_and_outstanding_ones_never() {
    use countersign::store::Webhooks;
    let config = ServerConfig { prune_interval: Duration::from_millis(50), session_ttl: Duration::from_secs(60 * 24 * 3600), ..fast() };
    assert_eq!(config.webhook_delivery_retention, Duration::from_secs(30 * 24 * 3600), "kept 30 days by default");
    let server = TestServer::start_with(config).await;
    let ws = server.workspace("acme").await;
    let ok = Receiver::start(Reply::Status(200)).await;
    let failing = Receiver::start(Reply::Status(500)).await;
    let (done_hook, _) = subscribe(&ws.owner, &ok.url, &["killswitch.*"]).await;
    let (retry_hook, _) = subscribe(&ws.owner, &failing.url, &["killswitch.*"]).await;
    switch(&ws.owner, true).await;
    let old = delivery_where(&ws.owner, &done_hook, "the first delivery", |d| d["status"] == "delivered").await;
    delivery_where(&ws.owner, &retry_hook, "a failed first attempt", |d| d["status"] == "retrying").await;

    // An outstanding delivery is never forgotten, however old: even with every finished
    // delivery due to go, only the delivered one goes.
    let everything = countersign::clock::format_ts(server.clock.now() + chrono::Duration::days(1));
    assert_eq!(server.store.prune_deliveries(&everything, 1000).await.unwrap(), 1);
    assert!(deliveries(&ws.owner, &done_hook).await.is_empty());
    let outstanding = deliveries(&ws.owner, &retry_hook).await;
    assert_eq!((outstanding.len(), &outstanding[0]["status"]), (1, &json!("retrying")));

    // Thirty-one days on, the server forgets a delivery that finished then by itself, and
    // keeps one that finished just now. The events stay in the audit log.
    switch(&ws.owner, false).await;
    let second = delivery_where(&ws.owner, &done_hook, "the second delivery", |d| d["status"] == "delivered").await;
    server.clock.advance(chrono::Duration::days(31));
    switch(&ws.owner, true).await;
    let third =
        delivery_where(&ws.owner, &done_hook, "the third delivery", |d| d["status"] == "delivered" && d["id"] != second["id"]).await;
    eventually("the month-old delivery to be forgotten", || async {
        let ids: Vec<Value> = deliveries(&ws.owner, &done_hook).await.iter().map(|d| d["id"].clone()).collect();
        (!ids.contains(&second["id"])).then_some(ids)
    })
    .await
    .iter()
    .for_each(|id| assert_eq!(id, &third["id"], "only the recent delivery is left"));
    let events = event_types(&ws.owner).await;
    assert_eq!(events.iter().filter(|t| t.starts_with("killswitch.")).count(), 3, "{events:?}");
    assert_ne!(old["id"], third["id"]);
}
