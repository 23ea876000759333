//! The live audit stream: resume without gap or repeat (across a restart too), live
//! delivery, heartbeats, and a stalled client that cannot slow the gate.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Opens the stream and returns the next `n` audit events' seqs and types.
async fn read_events(api: &Api, last_event_id: Option<i64>, query: &str, n: usize) -> Vec<(i64, String)> {
    let mut req = reqwest::Client::new().get(format!("{}/v1/audit/stream{query}", api.base)).bearer_auth(api.token.as_deref().unwrap());
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut events = resp.bytes_stream().eventsource();
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("an event within 10 s").unwrap().unwrap();
        if e.event != "audit" {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(e.id, v["seq"].to_string(), "the SSE id is the seq");
        out.push((v["seq"].as_i64().unwrap(), v["event_type"].as_str().unwrap().to_string()));
    }
    out
}

fn assert_contiguous(seqs: &[i64], from: i64) {
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, from + i as i64, "gap or repeat at position {i}: {seqs:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_has_no_gap_and_no_repeat_even_across_a_restart() {
    let mut server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    for i in 0..5 {
        submit(&ws.owner, "crm.read", json!({"i": i})).await;
    }
    let first = read_events(&ws.owner, None, "", 6).await;
    assert_contiguous(&first.iter().map(|e| e.0).collect::<Vec<_>>(), 1);
    let last = first.last().unwrap().0;

    server.restart().await;
    let owner = server.sign_in("owner@acme.test").await;
    for i in 5..8 {
        submit(&owner, "crm.read", json!({"i": i})).await;
    }
    let total = owner.all_events().await.len() as i64;
    let rest = read_events(&owner, Some(last), "", (total - last) as usize).await;
    assert_contiguous(&rest.iter().map(|e| e.0).collect::<Vec<_>>(), last + 1);
    // ?after_seq= does the same.
    let again = read_events(&owner, None, &format!("?after_seq={last}"), 3).await;
    assert_eq!(again[0].0, last + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn resuming_past_the_end_of_the_log_is_refused_not_left_waiting() {
    let server = TestServer::start().await;
    let ws = server.workspace("ahead").await;
    let head = ws.owner.all_events().await.len() as i64;
    // Up to the head is a resume point (nothing to backfill yet); past it is another log's.
    let at_head = reqwest::Client::new()
        .get(format!("{}/v1/audit/stream", ws.owner.base))
        .bearer_auth(ws.owner.token.as_deref().unwrap())
        .header("Last-Event-ID", head.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(at_head.status(), 200);
    drop(at_head);
    let r = ws.owner.send(reqwest::Method::GET, "/v1/audit/stream", None, &[("Last-Event-ID", &(head + 1000).to_string())]).await;
    r.assert_error(409, "resume_point_ahead");
    assert!(r.body["error"]["message"].as_str().unwrap().contains(&format!("ends at seq {head}")), "{}", r.body);
    ws.owner.get(&format!("/v1/audit/stream?after_seq={}", head + 1)).await.assert_error(409, "resume_point_ahead");
}

#[tokio::test(flavor = "multi_thread")]
async fn live_events_arrive_and_filters_apply() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    let head = ws.owner.all_events().await.len() as i64;
    let watcher = {
        let api = ws.owner.clone();
        tokio::spawn(async move { read_events(&api, Some(head), "?types=killswitch.*", 2).await })
    };
    // Give the stream a moment to be connected is not needed: it resumes from `head`
    // whatever happens before it subscribes.
    submit(&ws.owner, "crm.read", json!({})).await;
    ws.owner.put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "drill"})).await;
    ws.owner.put("/v1/killswitches/workspace", json!({"engaged": false, "reason": "done"})).await;
    let got = watcher.await.unwrap();
    let types: Vec<&str> = got.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(types, ["killswitch.engaged", "killswitch.lifted"]);

    // A filter that could never match is a mistake, said before the stream opens.
    for bad in ["Killswitch.Engaged", "killswitch.**", "killswitch engaged"] {
        let r = ws.owner.get(&format!("/v1/audit/stream?types={}", bad.replace(' ', "%20"))).await;
        assert_eq!((r.status, r.code()), (400, "invalid_query"), "{bad}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("is not an event type"), "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_streams_send_heartbeats() {
    let config = countersign::server::ServerConfig { stream_heartbeat: Duration::from_millis(200), ..Default::default() };
    let server = TestServer::start_with(config).await;
    let ws = server.workspace("acme").await;
    // From the head: nothing to backfill, so the first thing sent is a heartbeat.
    let head = ws.owner.all_events().await.len();
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/audit/stream?after_seq={head}", server.base))
        .bearer_auth(ws.owner.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("a heartbeat").unwrap().unwrap();
    assert!(String::from_utf8_lossy(&chunk).starts_with(": heartbeat"), "{chunk:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_cannot_slow_the_gate_and_loses_nothing() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    let start_seq = ws.owner.all_events().await.len() as i64;

    // A client that asks for the stream and then never reads a byte (with a small
    // receive window, so the kernel's buffers do not hide the stall for megabytes).
    let addr = server.base.trim_start_matches("http://").to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr.parse().unwrap()).await.unwrap();
    let req = format!(
        "GET /v1/audit/stream HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\nlast-event-id: {start_seq}\r\n\r\n",
        ws.owner.token.as_deref().unwrap()
    );
    stalled.write_all(req.as_bytes()).await.unwrap();

    // The gate at full speed meanwhile: every decision is answered.
    let n = 3000;
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let api = ws.owner.clone();
            tokio::spawn(async move {
                for i in (w..n).step_by(16) {
                    let r = submit(&api, "crm.read", json!({"i": i, "pad": "x".repeat(200)})).await;
                    assert_eq!(r.body["status"], "executed");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }

    // Now read what the stalled client was sent: events, then a `lagged` notice saying
    // where to resume, then the end of the stream.
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server did not let the stalled client go");
    let text = String::from_utf8_lossy(&raw);
    let resume: i64 = text
        .split("event: lagged\ndata: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|l| serde_json::from_str::<Value>(l.trim_end_matches('\r')).ok())
        .and_then(|v| v["resume_after_seq"].as_i64())
        .expect("a lagged event with resume_after_seq");
    let last_id: i64 = text.lines().rev().filter_map(|l| l.strip_prefix("id: ")).find_map(|s| s.trim().parse().ok()).unwrap_or(start_seq);
    assert_eq!(resume, last_id, "resume exactly after the last event sent");

    // Resuming from there delivers the rest, with no gap and no repeat.
    let total = ws.owner.all_events().await.len() as i64;
    let rest = read_events(&ws.owner, Some(resume), "", (total - resume) as usize).await;
    assert_contiguous(&rest.iter().map(|e| e.0).collect::<Vec<_>>(), resume + 1);
}
