//! Screen tests: the console driven by key events and network messages through the real
//! update path, drawn on a test terminal, and compared with reviewed snapshots at
//! 80×24 and 120×40.

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use serde_json::json;

use super::action::{Action, NetMsg, StreamMsg};
use super::app::{App, Init};
use super::theme::Theme;
use crate::approval::{State, Verdict};
use crate::audit::{Actor, AuditEvent, EventDraft, GENESIS_HASH, Via};
use crate::export_file::Format;
use crate::gate::{Citation, Effect as RuleEffect, Policy, Stage};
use crate::model::{Approval, ApprovalDecision, DecisionRecord, KillSwitch, KillSwitches, Member, MemberStatus};
use crate::server::routes::sessions::{Me, WorkspaceRef};

pub fn now() -> DateTime<Utc> {
    crate::clock::parse_ts("2026-11-23T10:00:00Z").unwrap()
}

fn at(secs: i64) -> String {
    crate::clock::format_ts(now() + chrono::Duration::seconds(secs))
}

pub fn me(role: &str, permissions: &[&str]) -> Me {
    Me {
        workspace: WorkspaceRef { id: "org_01JB9Y6Z3K8Q4W2N7R5T0V1X2Y".into(), name: "acme".into() },
        member: Member {
            id: "usr_ada".into(),
            email: "ada@acme.test".into(),
            name: "Ada".into(),
            role: role.into(),
            status: MemberStatus::Active,
            created_at: at(-86_400),
            updated_at: at(-86_400),
        },
        credential: "session".into(),
        credential_id: "ses_1".into(),
        expires_at: Some(at(3600)),
        permissions: permissions.iter().map(|s| s.to_string()).collect(),
        tools: None,
    }
}

pub const ADMIN: &[&str] = &[
    "approvals:read",
    "approvals:decide",
    "audit:read",
    "audit:export",
    "killswitch:read",
    "killswitch:engage",
    "killswitch:lift",
    "tools:read",
    "members:read",
];

fn trace(last: &str) -> Vec<Stage> {
    let s = |stage: &str, verdict: &str, detail: &str| Stage { stage: stage.into(), verdict: verdict.into(), detail: detail.into() };
    vec![
        s("authenticate", "pass", "agent token tok_billing (billing-agent) owned by usr_dev"),
        s("scope", "pass", "within the caller's tools"),
        s("constitution", "require_approval", "rules external-email (version 3)"),
        s("tool_policy", last, "policy `approve`"),
        s("outcome", "pending_approval (1)", ""),
    ]
}

pub fn approvals() -> Vec<Approval> {
    let base = |id: &str, tool: &str, policy: Policy, required: u8, expires: i64, conf: Option<f64>| Approval {
        id: id.into(),
        action_id: format!("act_{id}"),
        tool: tool.into(),
        state: State::Pending,
        policy,
        required,
        approvals: 0,
        decisions: vec![],
        requester_id: "usr_dev".into(),
        requester_email: Some("dev@acme.test".into()),
        agent_token_id: Some("tok_billing".into()),
        agent_name: Some("billing-agent".into()),
        payload_sha256: format!("{:0<64}", format!("{}a1b2c3d4e5f6", id.len())),
        resource: None,
        reason: Some("Monthly invoice run".into()),
        confidence: conf,
        created_at: at(-120),
        expires_at: at(expires),
        decided_at: None,
        consumed_at: None,
        payload: None,
        current: None,
        decision: None,
    };
    let mut pay = base("apv_pay", "payments.charge", Policy::ApproveDual, 2, 95, Some(0.71));
    pay.approvals = 1;
    pay.decisions = vec![ApprovalDecision {
        member_id: "usr_cyd".into(),
        decision: Verdict::Approve,
        reason: None,
        payload_sha256: pay.payload_sha256.clone(),
        created_at: at(-30),
        member_email: Some("cyd@acme.test".into()),
    }];
    vec![base("apv_mail", "email.send", Policy::Approve, 1, 1_500, Some(0.82)), pay, {
        let mut m = base("apv_mile", "milestones.update", Policy::Approve, 1, 600, Some(0.44));
        m.resource = Some("milestone:42".into());
        m
    }]
}

pub fn detail(a: &Approval) -> Approval {
    let mut d = a.clone();
    match a.tool.as_str() {
        "email.send" => {
            d.payload = Some(
                json!({"to": ["finance@northwind.example", "ap@globex.example"], "cc": ["accounts@acme.test"], "subject": "Invoice 2041", "body": "Please find attached this month's invoice."}),
            );
        }
        "payments.charge" => {
            d.payload = Some(json!({"customer": "cus_northwind", "amount": 12500, "currency": "EUR", "description": "Annual plan renewal"}))
        }
        _ => {
            d.current =
                Some(json!({"id": 42, "title": "Northwind rollout", "status": "in_progress", "due": "2026-12-01", "owner": "dana"}));
            d.payload = Some(json!({"id": 42, "title": "Northwind rollout", "status": "done", "due": "2026-12-14", "owner": "dana"}));
        }
    }
    d.decision = Some(DecisionRecord {
        trace: trace("require_approval"),
        cited_rules: vec![Citation {
            rule_id: "external-email".into(),
            title: "Mail outside the company needs a person".into(),
            effect: RuleEffect::RequireApproval,
            error: None,
        }],
        constitution_version: Some(3),
        code: None,
        message: None,
    });
    d
}

pub fn events(n: i64) -> Vec<AuditEvent> {
    let types = [
        "action.requested",
        "approval.requested",
        "approval.granted",
        "approval.consumed",
        "action.executed",
        "killswitch.engaged",
        "action.blocked",
    ];
    let mut prev = GENESIS_HASH.to_string();
    (1..=n)
        .map(|seq| {
            let t = types[(seq as usize - 1) % types.len()];
            let (actor, outcome) = if t == "approval.granted" || t == "killswitch.engaged" {
                (Actor::user("usr_ada"), "success")
            } else {
                (Actor::agent("tok_billing"), if t == "action.blocked" { "blocked" } else { "success" })
            };
            let draft = EventDraft::new(t, actor, Via::Agent)
                .resource(format!("act_{seq:04}"))
                .outcome(outcome)
                .data(json!({"tool": "email.send"}));
            let mut e =
                AuditEvent::seal(draft, "org_1", seq - 1, &prev, crate::clock::format_ts(now() - chrono::Duration::seconds(n - seq)));
            // Fixed ids, so snapshots of an event's detail never change.
            e.id = format!("evt_{seq:026}");
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            e
        })
        .collect()
}

pub fn switches(engaged: bool) -> KillSwitches {
    KillSwitches {
        workspace: KillSwitch { target: "workspace".into(), engaged: false, reason: None, changed_by: None, changed_at: None },
        tools: vec![KillSwitch {
            target: "email.send".into(),
            engaged,
            reason: Some("bad template sent twice".into()),
            changed_by: Some("usr_ada".into()),
            changed_at: Some(at(-300)),
        }],
    }
}

/// A console with the usual data loaded, as if the server had answered.
pub fn app(w: u16, h: u16) -> App {
    let mut app = App::new(Init {
        server: "http://127.0.0.1:8750".into(),
        email: "ada@acme.test".into(),
        theme: Theme::default_theme(),
        themes: vec!["dark".into(), "ansi16".into()],
        now: now(),
        size: (w, h),
        bell: false,
        cwd: "/home/ada".into(),
    });
    app.take_effects();
    app.update(Action::Net(NetMsg::Me(Ok(me("admin", ADMIN)))));
    app.update(Action::Net(NetMsg::Stream(StreamMsg::Connected)));
    app.update(Action::Net(NetMsg::Approvals(Ok(approvals()))));
    for a in approvals() {
        app.update(Action::Net(NetMsg::Approval(Ok(detail(&a)))));
    }
    app.update(Action::Net(NetMsg::Switches(Ok(switches(false)))));
    app.update(Action::Net(NetMsg::Names(vec![
        ("usr_ada".into(), "ada@acme.test".into()),
        ("tok_billing".into(), "agent billing-agent".into()),
    ])));
    for e in events(12) {
        app.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
    }
    app.take_effects();
    app
}

pub fn key(app: &mut App, code: KeyCode) {
    app.update(Action::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

pub fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

pub fn render(app: &App) -> TestBackend {
    let mut t = Terminal::new(TestBackend::new(app.size.0, app.size.1)).unwrap();
    t.draw(|f| super::ui::draw(f, app)).unwrap();
    t.backend().clone()
}

/// Snapshots a scene at both sizes.
macro_rules! scene {
    ($name:ident, |$app:ident| $body:block) => {
        #[test]
        fn $name() {
            for (w, h) in [(80u16, 24u16), (120, 40)] {
                #[allow(unused_mut)]
                let mut $app = app(w, h);
                $body
                insta::assert_snapshot!(format!("{}_{w}x{h}", stringify!($name)), render(&$app));
            }
        }
    };
}

scene!(approvals_queue, |a| {});
scene!(approvals_detail, |a| {
    key(&mut a, KeyCode::Enter);
});
scene!(approvals_detail_with_diff, |a| {
    keys(&mut a, "G");
    key(&mut a, KeyCode::Enter);
});
scene!(approve_confirmation, |a| {
    keys(&mut a, "a");
});
scene!(deny_reason, |a| {
    keys(&mut a, "d");
    keys(&mut a, "wrong recipient");
});
scene!(deny_confirmation, |a| {
    keys(&mut a, "d");
    keys(&mut a, "wrong recipient");
    key(&mut a, KeyCode::Enter);
});
scene!(audit_tail, |a| {
    keys(&mut a, "2");
});
scene!(audit_paused_with_new_events, |a| {
    keys(&mut a, "2 kk");
    for e in events(15).into_iter().skip(12) {
        a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
    }
});
scene!(audit_event_detail, |a| {
    keys(&mut a, "2");
    key(&mut a, KeyCode::Enter);
});
scene!(audit_filter, |a| {
    keys(&mut a, "2/type:approval.*");
});
scene!(audit_verified, |a| {
    keys(&mut a, "2v");
    let report =
        crate::audit::VerifyReport { ok: true, events: 12, first_broken_seq: None, reason: None, head_seq: 12, head_hash: "ab".repeat(32) };
    a.update(Action::Net(NetMsg::Verified(Ok(report))));
});
scene!(audit_broken, |a| {
    keys(&mut a, "2v");
    let report = crate::audit::VerifyReport {
        ok: false,
        events: 6,
        first_broken_seq: Some(7),
        reason: Some("the event's content does not match its hash: it was changed after it was written".into()),
        head_seq: 6,
        head_hash: "cd".repeat(32),
    };
    a.update(Action::Net(NetMsg::Verified(Ok(report))));
});
scene!(switches_screen, |a| {
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    keys(&mut a, "5");
});
scene!(kill_picker, |a| {
    a.update(Action::Net(NetMsg::Tools(Ok(vec![]))));
    keys(&mut a, "K");
});
#[test]
fn the_kill_picker_filters_by_name_and_says_where_the_list_goes_on() {
    let mut a = app(80, 24);
    let tool = |name: String| -> crate::model::Tool {
        serde_json::from_value(json!({"name": name, "description": "", "kind": "read", "irreversible": false, "policy": "auto", "min_confidence": null, "approval_ttl_seconds": null, "connector": {"type": "record"}, "created_at": at(0), "updated_at": at(0)})).unwrap()
    };
    let mut tools: Vec<crate::model::Tool> = (0..22).map(|i| tool(format!("crm.tool{i:02}"))).collect();
    tools.push(tool("email.send".into()));
    tools.push(tool("refunds.issue".into()));
    a.update(Action::Net(NetMsg::Tools(Ok(tools))));
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    keys(&mut a, "K");
    let text = render(&a).to_string();
    assert!(text.contains("25 targets") && text.contains("more below"), "{text}");
    // An engaged one says so rather than doing nothing.
    keys(&mut a, "/email");
    key(&mut a, KeyCode::Enter);
    assert!(render(&a).to_string().contains("already engaged: lift it on 5 Switches"));
    // `esc` clears the filter first; typing finds the one out of sight.
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "/refu");
    key(&mut a, KeyCode::Enter);
    let text = render(&a).to_string();
    assert!(text.contains("refunds.issue"), "{text}");
    assert!(matches!(&a.dialog, Some(super::dialogs::Dialog::Reason(_))), "the reason is asked next");
}

scene!(kill_reason, |a| {
    keys(&mut a, "K");
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "incident 42");
});
scene!(kill_confirmation, |a| {
    keys(&mut a, "K");
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "incident 42");
    key(&mut a, KeyCode::Enter);
});
scene!(lift_reason, |a| {
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    keys(&mut a, "5jl");
    keys(&mut a, "template fixed");
});
scene!(help_overlay, |a| {
    keys(&mut a, "?");
});
scene!(palette_completion, |a| {
    keys(&mut a, ":sw");
    key(&mut a, KeyCode::Tab);
});
scene!(engaged_banner, |a| {
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
});
scene!(disconnected_banner, |a| {
    a.update(Action::Net(NetMsg::Stream(StreamMsg::Down {
        error: "connection refused".into(),
        attempt: 3,
        retry_in: std::time::Duration::from_secs(2),
    })));
});
scene!(sign_in_again, |a| {
    a.update(Action::Net(NetMsg::Stream(StreamMsg::Unauthorized("this session has expired; sign in again".into()))));
});
scene!(viewer_cannot_approve, |a| {
    a.update(Action::Net(NetMsg::Me(Ok(me("viewer", &["approvals:read", "audit:read", "killswitch:read"])))));
    keys(&mut a, "a");
});

#[test]
fn too_small() {
    let a = app(60, 20);
    insta::assert_snapshot!("too_small", render(&a));
}

#[test]
fn too_small_keys_do_nothing_but_quit_and_stopped_switches_still_show() {
    let mut a = app(80, 24);
    key(&mut a, KeyCode::Enter);
    a.update(Action::Resize(60, 16));
    // Blind, an `a` and a `y` must not approve what nobody can see, nor `K` open a dialog.
    keys(&mut a, "ayKd");
    assert!(a.dialog.is_none() && a.input.is_none());
    assert!(a.take_effects().is_empty());
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    let text = render(&a).to_string();
    assert!(text.contains("KILL SWITCH ENGAGED: email.send") && text.contains("until then only q works"), "{text}");
    keys(&mut a, "q");
    assert!(a.quit);
}

#[test]
fn too_small_with_unsaved_work_q_waits_for_a_window_it_can_ask_in() {
    let mut a = simulate(80, 24);
    keys(&mut a, "le");
    a.update(Action::Paste(" ".into()));
    key(&mut a, KeyCode::Esc);
    assert!(a.quit_loses_work());
    a.update(Action::Resize(60, 16));
    keys(&mut a, "q");
    // Nothing opened that could not be seen, nothing lost, and the screen says why.
    assert!(!a.quit && a.dialog.is_none());
    assert!(render(&a).to_string().contains("q asks before quitting"));
    a.update(Action::Resize(80, 24));
    keys(&mut a, "q");
    assert!(matches!(&a.dialog, Some(super::dialogs::Dialog::Confirm(c)) if c.title.contains("lose your draft")));
}

fn many_switches() -> KillSwitches {
    let tool = |name: &str, reason: &str| KillSwitch {
        target: name.into(),
        engaged: true,
        reason: Some(reason.into()),
        changed_by: Some("usr_ada".into()),
        changed_at: Some(at(-60)),
    };
    KillSwitches {
        workspace: KillSwitch { target: "workspace".into(), engaged: false, reason: None, changed_by: None, changed_at: None },
        tools: vec![
            tool("email.send", "phishing incident INC-4411"),
            tool("payments.charge", "duplicate charges reported by three customers this morning, see INC-4412"),
            tool("refunds.issue", "paused with payments"),
            tool("crm.read", "顧客データ漏洩の疑い、調査中です"),
            KillSwitch { target: "docs.read".into(), engaged: false, reason: None, changed_by: None, changed_at: None },
        ],
    }
}

#[test]
fn the_banner_names_every_engaged_switch_however_long_the_reasons() {
    for w in [80u16, 120] {
        let mut a = app(w, 24);
        a.update(Action::Net(NetMsg::Switches(Ok(many_switches()))));
        let banner: String = super::ui::banner_lines(&a).iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n");
        for name in ["email.send", "payments.charge", "refunds.issue", "crm.read"] {
            assert!(banner.contains(name), "{name} missing at {w} columns:\n{banner}");
        }
        assert!(!banner.contains("docs.read"));
        let text = render(&a).to_string();
        assert!(text.contains("refunds.issue"), "{text}");
    }
}

#[test]
fn long_tool_names_that_share_a_start_stay_told_apart() {
    let mut a = app(80, 24);
    let mut switches = many_switches();
    for name in ["billing.reconcile-ledger-entries-for-quarter-end", "billing.reconcile-ledger-entries-for-quarter-end-and-close-books"] {
        switches.tools.push(KillSwitch {
            target: name.into(),
            engaged: true,
            reason: Some("audit".into()),
            changed_by: None,
            changed_at: None,
        });
    }
    a.update(Action::Net(NetMsg::Switches(Ok(switches))));
    keys(&mut a, "5");
    let text = render(&a).to_string();
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("billing.") && l.contains("ENGAGED  audit")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().all(|r| r.contains('…')), "a cut name says so:\n{text}");
    assert!(rows[0].contains("close-books") != rows[1].contains("close-books"), "{text}");
}

#[test]
fn the_cursor_stays_on_the_switch_it_was_on_when_the_list_reorders() {
    let mut a = app(80, 24);
    a.update(Action::Net(NetMsg::Switches(Ok(many_switches()))));
    keys(&mut a, "5");
    while a.switches.rows()[a.switches.cursor].0.as_deref() != Some("crm.read") {
        keys(&mut a, "j");
    }
    // Lifted, crm.read sorts below the engaged ones; the cursor goes with it.
    let mut lifted = many_switches();
    lifted.tools.iter_mut().find(|s| s.target == "crm.read").unwrap().engaged = false;
    a.update(Action::Net(NetMsg::Switches(Ok(lifted))));
    let (target, switch) = &a.switches.rows()[a.switches.cursor];
    assert_eq!((target.as_deref(), switch.engaged), (Some("crm.read"), false));
}

#[test]
fn an_engage_the_server_never_confirmed_says_so_and_stays_said() {
    let mut a = app(80, 24);
    a.update(Action::Net(NetMsg::SwitchSet {
        tool: None,
        engaged: true,
        result: Err(crate::client::ClientError::Unreachable("error sending request".into())),
    }));
    let text = render(&a).to_string();
    assert!(text.contains("Kill switch NOT confirmed for the workspace: treat it as still running"), "{text}");
    // No reload that would fail the same way and replace the message.
    assert!(!a.take_effects().iter().any(|e| matches!(e, super::action::Effect::FetchSwitches)));
    a.update(Action::Net(NetMsg::SwitchSet {
        tool: Some("email.send".into()),
        engaged: false,
        result: Err(crate::client::ClientError::Api { status: 403, code: "permission_denied".into(), message: "no".into() }),
    }));
    assert!(render(&a).to_string().contains("Kill switch for `email.send` NOT lifted: it stays stopped."));
}

#[test]
fn new_arrivals_do_not_move_the_selection() {
    let mut a = app(80, 24);
    keys(&mut a, "j");
    let selected = a.approvals.current().unwrap().id.clone();
    // A new approval expiring sooner than everything else arrives at the top.
    let mut list = approvals();
    let mut urgent = list[0].clone();
    urgent.id = "apv_urgent".into();
    urgent.expires_at = at(30);
    list.push(urgent);
    a.update(Action::Net(NetMsg::Approvals(Ok(list))));
    assert_eq!(a.approvals.current().unwrap().id, selected);
    assert_eq!(a.approvals.items[0].id, "apv_urgent");
}

#[test]
fn an_events_labels_never_run_into_their_values() {
    let mut a = app(80, 30);
    let last = events(12).pop().unwrap();
    let draft = EventDraft::new("action.requested", Actor::agent("tok_billing"), Via::Agent)
        .resource("act_0013")
        .payload_sha256("9f".repeat(32))
        .data(json!({"tool": "email.send", "constitution_version": 3, "agent_token_id": "tok_billing"}));
    let e = AuditEvent::seal(draft, "org_1", 12, &last.hash, crate::clock::format_ts(now()));
    a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
    keys(&mut a, "2");
    key(&mut a, KeyCode::Enter);
    let text = render(&a).to_string();
    assert!(text.contains("constitution_version 3") && text.contains("agent_token_id       tok_billing"), "{text}");
    assert!(text.contains("payload sha256       9f9f"), "{text}");
}

#[test]
fn the_queue_names_agents_for_roles_that_cannot_list_tokens() {
    let mut a = app(80, 24);
    a.names.clear();
    a.update(Action::Net(NetMsg::Approvals(Ok(approvals()))));
    assert_eq!(a.names.get("tok_billing").map(String::as_str), Some("agent billing-agent"));
    assert_eq!(a.names.get("usr_dev").map(String::as_str), Some("dev@acme.test"));
    keys(&mut a, "2");
    let text = render(&a).to_string();
    assert!(text.contains("agent billing-agent") && !text.contains("agent:tok_billing"), "{text}");
}

#[test]
fn an_open_event_stays_put_while_the_tail_follows() {
    let mut a = app(80, 24);
    keys(&mut a, "2");
    key(&mut a, KeyCode::Enter);
    assert!(a.audit.follow);
    for e in events(15).into_iter().skip(12) {
        a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
    }
    // The detail is still the event that was opened, not the newest.
    let text = render(&a).to_string();
    assert!(text.contains("seq 12 ·") && !text.contains("seq 15 ·"), "{text}");
    // The tail followed underneath it.
    key(&mut a, KeyCode::Esc);
    assert_eq!(a.audit.current().map(|e| e.seq), Some(15));
}

#[test]
fn the_first_of_two_approvals_keeps_the_payload_on_screen() {
    let mut a = app(80, 24);
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.approvals.current().unwrap().tool, "payments.charge");
    // The decision's answer says where the approval stands, without payload or trace.
    let mut answer = approvals().into_iter().find(|x| x.id == "apv_pay").unwrap();
    answer.approvals = 1;
    a.update(Action::Net(NetMsg::Decided { verdict: Verdict::Approve, result: Ok(answer) }));
    let text = render(&a).to_string();
    assert!(text.contains("cus_northwind") && !text.contains("null"), "{text}");
}

#[test]
fn an_approval_that_expires_while_read_leaves_nothing_selected() {
    let mut a = app(80, 24);
    key(&mut a, KeyCode::Enter);
    let read = a.approvals.current().unwrap().id.clone();
    let left: Vec<Approval> = approvals().into_iter().filter(|x| x.id != read).collect();
    a.update(Action::Net(NetMsg::Approvals(Ok(left))));
    assert!(!a.approvals.open && a.approvals.current().is_none());
    let text = render(&a).to_string();
    assert!(text.contains("payments.charge approval you were reading left the queue"), "{text}");
    // A reflexive approve finds nothing to approve: the approval that slid into its
    // place has not been read.
    a.take_effects();
    keys(&mut a, "ay");
    assert!(a.dialog.is_none());
    assert!(!a.take_effects().iter().any(|e| matches!(e, super::action::Effect::Decide { .. })));
    // The first move selects the row under the cursor.
    keys(&mut a, "j");
    assert_eq!(a.approvals.current().map(|x| x.tool.as_str()), Some("milestones.update"));
}

fn palette(a: &mut App, command: &str) {
    keys(a, &format!(":{command}"));
    key(a, KeyCode::Enter);
}

#[test]
fn kill_from_the_palette_names_one_target_and_knows_what_is_already_stopped() {
    let mut a = app(80, 24);
    let tool_named = |name: &str| -> crate::model::Tool {
        serde_json::from_value(json!({"name": name, "description": "", "kind": "read", "irreversible": false, "policy": "auto", "min_confidence": null, "approval_ttl_seconds": null, "connector": {"type": "record"}, "created_at": at(0), "updated_at": at(0)})).unwrap()
    };
    a.update(Action::Net(NetMsg::Tools(Ok(vec![tool_named("email.send"), tool_named("crm.read")]))));
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    palette(&mut a, "kill crm.read right now please");
    assert!(a.dialog.is_none());
    assert!(render(&a).to_string().contains(":kill takes one name"));
    palette(&mut a, "kill email.send");
    assert!(a.dialog.is_none(), "no reason is asked for a switch already on");
    assert!(render(&a).to_string().contains("`email.send` is already stopped"));
    palette(&mut a, "kill crm.read");
    keys(&mut a, "bad deploy");
    key(&mut a, KeyCode::Enter);
    let text = render(&a).to_string();
    assert!(text.contains("Every call of crm.read is blocked"), "{text}");
}

#[test]
fn lifting_the_workspace_says_which_tools_stay_stopped() {
    let mut a = app(80, 24);
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    let lifted =
        KillSwitch { target: "workspace".into(), engaged: false, reason: Some("all clear".into()), changed_by: None, changed_at: None };
    a.update(Action::Net(NetMsg::SwitchSet {
        tool: None,
        engaged: false,
        result: Ok(crate::client::SwitchSet { switch: lifted, changed: true }),
    }));
    let text = render(&a).to_string();
    assert!(text.contains("the workspace runs again, but not email.send"), "{text}");
}

#[test]
fn bare_lift_lifts_the_one_engaged_switch_and_never_one_that_is_not() {
    use super::dialogs::{Dialog, ReasonFor};
    let mut a = app(80, 24);
    // Nothing engaged: nothing to lift, and nothing asked.
    palette(&mut a, "lift");
    assert!(a.dialog.is_none());
    assert!(a.toast.as_ref().is_some_and(|t| t.text.contains("nothing to lift")));
    // Only `email.send` engaged: a bare :lift asks to lift it, not the workspace.
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    palette(&mut a, "lift");
    assert!(matches!(&a.dialog, Some(Dialog::Reason(r)) if matches!(&r.purpose, ReasonFor::Lift { tool: Some(t) } if t == "email.send")));
    key(&mut a, KeyCode::Esc);
    // Naming a switch that is not engaged says so.
    palette(&mut a, "lift workspace");
    assert!(a.dialog.is_none());
    assert!(a.toast.as_ref().is_some_and(|t| t.text == "The workspace is not stopped: nothing to lift."));
}

#[test]
fn the_palette_opens_access_tabs_by_name() {
    let mut a = app(80, 24);
    with_access(&mut a);
    palette(&mut a, "tokens");
    let text = render(&a).to_string();
    assert_eq!(a.screen, super::app::Screen::Access);
    assert!(text.contains("billing-agent"), "{text}");
    palette(&mut a, "nonsense");
    let text = render(&a).to_string();
    assert!(text.contains("`nonsense` is not a command: tab lists them all"), "{text}");
}

/// Each row of the screen as a terminal shows it: a wide character's second cell is not
/// a character of its own.
fn screen_rows(b: &TestBackend) -> Vec<String> {
    let buf = b.buffer();
    (0..buf.area.height)
        .map(|y| {
            let mut row = String::new();
            let mut x = 0;
            while x < buf.area.width {
                let symbol = buf[(x, y)].symbol();
                row.push_str(symbol);
                x += unicode_width::UnicodeWidthStr::width(symbol).max(1) as u16;
            }
            row
        })
        .collect()
}

#[test]
fn a_payload_in_wide_characters_reads_whole_in_its_column() {
    // Each of these characters takes two columns: laid out by count of characters, half
    // of each wrapped line would run past the pane's edge and never be seen.
    let body = "請求書の送付先を変更する必要があります。経理部の山田さんに確認済みです。".repeat(2);
    for (w, h) in [(80u16, 30u16), (120, 40)] {
        let mut a = app(w, h);
        let mut d = detail(&a.approvals.current().unwrap().clone());
        d.payload = Some(json!({"件名": "請求書", "本文": body, "to": "ap@globex.example"}));
        a.update(Action::Net(NetMsg::Approval(Ok(d))));
        key(&mut a, KeyCode::Enter);
        let rows = screen_rows(&render(&a));
        let shown = rows.join("\n");
        let seen: String = shown.chars().filter(|c| !c.is_whitespace() && *c != '│').collect();
        assert!(seen.contains(&body), "the whole text, line after line:\n{shown}");
        // Field values start in one column, whatever the width of their names.
        let value_col = |name: &str, value: &str| {
            let row = rows.iter().find(|r| r.contains(name) && r.contains(value)).unwrap_or_else(|| panic!("{name}:\n{shown}"));
            unicode_width::UnicodeWidthStr::width(&row[..row.find(value).unwrap()])
        };
        assert_eq!(value_col("件名", "請求書"), value_col("to", "ap@globex"), "\n{shown}");
        // Every line of the diff, wrapped ones included, carries its mark.
        let pane = rows.iter().map(|r| r.rsplit('│').next().unwrap_or(r));
        let diff: Vec<&str> = pane.skip_while(|r| !r.contains("── Diff")).skip(2).take_while(|r| !r.trim().is_empty()).collect();
        assert!(diff.len() > 4 && diff.iter().all(|r| r.starts_with('+')), "\n{shown}");
    }
}

#[test]
fn a_detail_says_its_tool_is_stopped_now_whatever_the_trace_said_then() {
    let mut a = app(80, 24);
    while a.approvals.current().unwrap().tool != "email.send" {
        keys(&mut a, "j");
    }
    key(&mut a, KeyCode::Enter);
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    let text = render(&a).to_string();
    assert!(text.contains("email.send is stopped by a kill switch"), "{text}");
    assert!(text.contains("run now, even if approved."), "{text}");
}

#[test]
fn a_on_an_audit_event_about_a_waiting_approval_asks_to_approve_that_one() {
    use super::dialogs::Dialog;
    let mut a = app(80, 24);
    keys(&mut a, "2");
    // Anywhere else, `a` says where deciding happens.
    keys(&mut a, "a");
    assert!(a.dialog.is_none() && a.toast.as_ref().is_some_and(|t| t.text.contains("1 opens the queue")));
    // The newest event asks for `apv_mail` (queued third of three, by expiry).
    let prev = events(12).last().unwrap().hash.clone();
    let draft = EventDraft::new("approval.requested", Actor::agent("tok_billing"), Via::Agent)
        .resource("apv_mail")
        .data(json!({"approval_id": "apv_mail", "tool": "email.send"}));
    let e = AuditEvent::seal(draft, "org_1", 12, &prev, crate::clock::format_ts(now()));
    a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
    keys(&mut a, "a");
    assert_eq!(a.screen, super::app::Screen::Approvals);
    assert_eq!(a.approvals.current().map(|x| x.id.as_str()), Some("apv_mail"));
    assert!(matches!(&a.dialog, Some(Dialog::Confirm(c)) if c.title == "Approve email.send?"), "{:?}", a.dialog.is_some());
}

#[test]
fn a_decision_sends_the_hash_that_was_shown() {
    let mut a = app(80, 24);
    let selected = a.approvals.current().unwrap().clone();
    keys(&mut a, "ay");
    let effects = a.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, super::action::Effect::Decide { id, verdict: Verdict::Approve, payload_sha256, .. } if *id == selected.id && *payload_sha256 == selected.payload_sha256)),
        "{effects:?}"
    );
}

#[test]
fn deny_needs_a_reason_and_sends_it() {
    let mut a = app(80, 24);
    keys(&mut a, "d");
    key(&mut a, KeyCode::Enter);
    assert!(a.take_effects().is_empty(), "an empty reason is refused");
    keys(&mut a, "not this customer");
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "y");
    let effects = a.take_effects();
    assert!(
        effects.iter().any(
            |e| matches!(e, super::action::Effect::Decide { verdict: Verdict::Deny, reason: Some(r), .. } if r == "not this customer")
        ),
        "{effects:?}"
    );
}

#[test]
fn escape_and_n_cancel_without_effects() {
    let mut a = app(80, 24);
    keys(&mut a, "an");
    keys(&mut a, "K");
    key(&mut a, KeyCode::Esc);
    assert!(a.dialog.is_none());
    let changes = a
        .take_effects()
        .into_iter()
        .filter(|e| matches!(e, super::action::Effect::Decide { .. } | super::action::Effect::SetSwitch { .. }))
        .count();
    assert_eq!(changes, 0);
}

fn access_data() -> super::screens::access::AccessData {
    use crate::model::{Role, Token, TokenState};
    use crate::permissions::{BuiltinRole, Permission};
    let member = |id: &str, email: &str, role: &str, active: bool| Member {
        id: id.into(),
        email: email.into(),
        name: email.split('@').next().unwrap_or_default().into(),
        role: role.into(),
        status: if active { MemberStatus::Active } else { MemberStatus::Deactivated },
        created_at: at(-86_400 * 3),
        updated_at: at(-86_400),
    };
    let roles: Vec<Role> = BuiltinRole::ALL
        .iter()
        .map(|r| Role {
            id: None,
            name: r.name().into(),
            builtin: true,
            description: r.describe().into(),
            permissions: r.permissions().into_iter().collect(),
            members: 1,
        })
        .chain(std::iter::once(Role {
            id: Some("rol_approver".into()),
            name: "approver".into(),
            builtin: false,
            description: "decides approvals".into(),
            permissions: vec![Permission::ApprovalsRead, Permission::ApprovalsDecide],
            members: 1,
        }))
        .collect();
    let catalog = Permission::ALL
        .iter()
        .map(|p| crate::server::routes::roles::PermissionInfo {
            name: p.as_str().into(),
            description: p.describe().into(),
            grantable_to_agents: p.grantable_to_agents(),
        })
        .collect();
    let token = |id: &str, name: &str, state: TokenState| Token {
        id: id.into(),
        name: name.into(),
        owner_id: "usr_dev".into(),
        scopes: vec!["actions:submit".into()],
        tools: vec!["email.*".into()],
        hint: "csa_AbC1…".into(),
        created_at: at(-86_400 * 2),
        expires_at: Some(at(86_400 * 88)),
        last_used_at: Some(at(-40)),
        rotated_at: None,
        revoked_at: None,
        state,
    };
    super::screens::access::AccessData {
        members: Some(vec![
            member("usr_owner", "owner@acme.test", "owner", true),
            member("usr_ada", "ada@acme.test", "admin", true),
            member("usr_dev", "dev@acme.test", "member", true),
            member("usr_val", "val@acme.test", "viewer", false),
        ]),
        roles: Some((roles, catalog)),
        tokens: Some(vec![
            token("tok_billing", "billing-agent", TokenState::Active),
            token("tok_old", "old-importer", TokenState::Revoked),
        ]),
    }
}

fn with_access(a: &mut App) {
    let owner = [
        "approvals:read",
        "approvals:decide",
        "audit:read",
        "killswitch:read",
        "killswitch:engage",
        "killswitch:lift",
        "tools:read",
        "members:read",
        "members:manage",
        "roles:manage",
        "tokens:create",
        "tokens:manage",
        "actions:submit",
        "ownership:transfer",
    ];
    a.update(Action::Net(NetMsg::Me(Ok(me("owner", &owner)))));
    a.update(Action::Net(NetMsg::Access(access_data())));
    keys(a, "3");
}

scene!(access_members, |a| {
    with_access(&mut a);
});
scene!(access_roles, |a| {
    with_access(&mut a);
    keys(&mut a, "l");
});
scene!(access_tokens, |a| {
    with_access(&mut a);
    keys(&mut a, "ll");
});
scene!(new_member_form, |a| {
    with_access(&mut a);
    keys(&mut a, "n");
    keys(&mut a, "eve@acme.test");
});
scene!(change_role_form, |a| {
    with_access(&mut a);
    keys(&mut a, "jje");
});
scene!(deactivate_confirmation, |a| {
    with_access(&mut a);
    keys(&mut a, "jjx");
});
scene!(transfer_ownership_typed, |a| {
    with_access(&mut a);
    keys(&mut a, "jO");
    keys(&mut a, "ada@acme");
});
scene!(new_role_form, |a| {
    with_access(&mut a);
    keys(&mut a, "ln");
    keys(&mut a, "responder");
});
scene!(new_token_form, |a| {
    with_access(&mut a);
    keys(&mut a, "lln");
    keys(&mut a, "billing-agent");
});
scene!(token_secret_shown_once, |a| {
    with_access(&mut a);
    keys(&mut a, "ll");
    a.update(Action::Net(NetMsg::AccessDone(Ok((
        "Created the token `ci`.".into(),
        Some(("ci".into(), "csa_EXAMPLEexampleEXAMPLEexampleEXAMPLEexa0aBcDe".into())),
    )))));
});
scene!(revoke_confirmation, |a| {
    with_access(&mut a);
    keys(&mut a, "llx");
});
scene!(viewer_access_is_read_only, |a| {
    a.update(Action::Net(NetMsg::Me(Ok(me("viewer", &["members:read", "audit:read"])))));
    a.update(Action::Net(NetMsg::Access(access_data())));
    keys(&mut a, "3n");
});

#[test]
fn only_a_tokens_owner_is_offered_its_rotation() {
    let mut a = app(80, 24);
    with_access(&mut a);
    // ada (admin) on dev's token: revoke, yes; a new secret that acts as dev, no.
    keys(&mut a, "llr");
    assert!(a.dialog.is_none());
    assert!(render(&a).to_string().contains("Only a token's owner can rotate it"));
    keys(&mut a, "x");
    assert!(matches!(&a.dialog, Some(super::dialogs::Dialog::Confirm(c)) if c.title.contains("Revoke")));
}

#[test]
fn the_secret_dialog_keeps_its_keys_in_sight_whatever_it_says() {
    let mut a = app(80, 24);
    with_access(&mut a);
    keys(&mut a, "ll");
    a.update(Action::Net(NetMsg::AccessDone(Ok((
        "Created the token `ci`.".into(),
        Some(("ci".into(), "csa_EXAMPLEexampleEXAMPLEexampleEXAMPLEexa0aBcDe".into())),
    )))));
    if let Some(super::dialogs::Dialog::Secret(s)) = &mut a.dialog {
        s.copied = true;
    }
    key(&mut a, KeyCode::Esc);
    let text = render(&a).to_string();
    assert!(text.contains("esc again closes") && text.contains("Sent to the clipboard"), "{text}");
    assert!(text.contains("c copy to clipboard   enter I have stored it"), "the keys were pushed out:\n{text}");
}

#[test]
fn creating_a_token_by_keys_asks_for_what_it_needs() {
    let mut a = app(120, 40);
    with_access(&mut a);
    keys(&mut a, "lln");
    keys(&mut a, "ci-agent");
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Tab);
    a.update(Action::Key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL)));
    let effects = a.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, super::action::Effect::Access(super::dialogs::AccessOp::CreateToken { name, scopes, tools, expires_in_seconds: Some(_) })
            if name == "ci-agent" && scopes == &vec!["actions:submit".to_string()] && tools == &vec!["*".to_string()])),
        "{effects:?}"
    );
}

#[test]
fn typing_into_a_choice_says_what_the_field_takes_instead_of_dropping_the_keys() {
    let mut a = app(120, 40);
    with_access(&mut a);
    keys(&mut a, "lln");
    for _ in 0..3 {
        key(&mut a, KeyCode::Tab);
    }
    keys(&mut a, "email.*");
    let text = render(&a).to_string();
    assert!(text.contains("Expires is a choice: ←/→ picks one"), "{text}");
}

/// Each cell's style as text: the colour theme snapshots compare what a person sees.
fn styled(b: &TestBackend) -> String {
    let buf = b.buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut last = None;
        for x in 0..buf.area.width {
            let c = &buf[(x, y)];
            let style = (c.fg, c.bg, c.modifier);
            if last != Some(style) {
                out.push_str(&format!("«{:?}/{:?}/{:?}»", c.fg, c.bg, c.modifier));
                last = Some(style);
            }
            out.push_str(c.symbol());
        }
        out.push('\n');
    }
    out
}

fn themed(theme: Theme) -> App {
    let mut a = app(80, 24);
    a.theme = theme;
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    // The milestone update (it has a `current` state, so a diff), scrolled to the diff.
    keys(&mut a, "j");
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "jjjjjjjjjjjj");
    a
}

#[test]
fn sixteen_colour_theme() {
    let a = themed(Theme::built_in("ansi16").unwrap());
    insta::assert_snapshot!("theme_ansi16_detail_80x24", styled(&render(&a)));
}

#[test]
fn no_color_still_marks_selection_diffs_and_banners() {
    let mut a = themed(Theme::monochrome());
    let detail = styled(&render(&a));
    insta::assert_snapshot!("theme_no_color_detail_80x24", detail);
    // The banner is reverse video; diff lines carry their marks in text.
    assert!(detail.lines().nth(1).unwrap().contains("REVERSED"), "{detail}");
    assert!(render(&a).to_string().contains(r#"-   "status": "in_progress","#), "{}", render(&a));
    key(&mut a, KeyCode::Esc);
    let list = styled(&render(&a));
    insta::assert_snapshot!("theme_no_color_queue_80x24", list);
    assert!(list.lines().any(|l| l.contains("REVERSED") && l.contains("milestones.update")), "the selected row is reverse video:\n{list}");
}

/// In 16 colours a red or green word on the cyan selection hardly reads: the row under the
/// cursor takes the selection's colours whole, whatever its cells are coloured elsewhere.
#[test]
fn the_selected_row_reads_in_the_selections_colours_over_its_cells_colours() {
    let mut a = app(80, 24);
    a.theme = Theme::built_in("ansi16").unwrap();
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    while a.approvals.current().unwrap().tool != "email.send" {
        keys(&mut a, "j");
    }
    let selected_row = |a: &App, needle: &str| {
        let b = render(a);
        let y = screen_rows(&b).iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no row with {needle}:\n{}", b));
        let buf = b.buffer();
        (0..buf.area.width).map(|x| (buf[(x, y as u16)].fg, buf[(x, y as u16)].bg)).collect::<Vec<_>>()
    };
    // The stopped tool's mark is red in the queue, but not on the selected row.
    let row = selected_row(&a, "■ email.send");
    assert!(row.iter().all(|&c| c == (Color::Black, Color::Cyan)), "{row:?}");
    // The engaged switch's state is red in the list, but not on the selected row.
    keys(&mut a, "5");
    for _ in 0..a.switches.rows().len() {
        if !a.switches.rows()[a.switches.cursor].1.engaged {
            keys(&mut a, "j");
        }
    }
    let row = selected_row(&a, "ENGAGED  bad template");
    assert!(row.iter().all(|&c| c == (Color::Black, Color::Cyan)), "{row:?}");
}

/// The rows on screen are a window onto the list, perhaps filtered: the selection must
/// fall on the cursor's row, not on the row at the cursor's index in the whole list.
#[test]
fn the_selection_is_on_the_cursors_row_in_a_scrolled_and_filtered_list() {
    let mut a = app(80, 24);
    a.theme = Theme::built_in("ansi16").unwrap();
    keys(&mut a, "2");
    for e in events(80).into_iter().skip(12) {
        a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
    }
    let highlighted = |a: &App| {
        let b = render(a);
        let buf = b.buffer();
        let rows = screen_rows(&b);
        (0..buf.area.height)
            .filter(|&y| (0..buf.area.width).all(|x| (buf[(x, y)].fg, buf[(x, y)].bg) == (Color::Black, Color::Cyan)))
            .map(|y| rows[y as usize].clone())
            .collect::<Vec<String>>()
    };
    for moves in ["kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "jjj"] {
        keys(&mut a, moves);
        let seq = a.audit.current().unwrap().seq;
        let lit = highlighted(&a);
        assert_eq!(lit.len(), 1, "one selected row: {lit:?}");
        assert!(lit[0].trim_start().starts_with(&format!("{seq} ")), "seq {seq}: {lit:?}");
    }
    keys(&mut a, "/blocked");
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "kk");
    let current = a.audit.current().unwrap();
    assert_eq!(&*current.event_type, "action.blocked");
    let lit = highlighted(&a);
    assert_eq!(lit.len(), 1, "one selected row: {lit:?}");
    assert!(lit[0].trim_start().starts_with(&format!("{} ", current.seq)), "seq {}: {lit:?}", current.seq);
}

#[test]
fn every_built_in_theme_draws_every_screen() {
    for (name, _) in super::theme::BUILT_IN {
        let mut a = app(80, 24);
        a.theme = Theme::built_in(name).unwrap();
        for k in ["1", "2", "3", "5"] {
            keys(&mut a, k);
            let text = render(&a).to_string();
            assert!(text.contains("countersign"), "{name} {k}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Simulate
// ---------------------------------------------------------------------------------------

const PUBLISHER: &[&str] =
    &["approvals:read", "approvals:decide", "actions:simulate", "constitution:read", "constitution:publish", "tools:read"];

fn in_force() -> serde_json::Value {
    json!({
        "version": 3,
        "rules": [
            {"id": "external-email", "title": "Mail outside the company needs a person", "description": "", "when": "tool == 'email.send' && payload.to.exists(r, !r.endsWith('@acme.test'))", "effect": "require_approval", "on_error": "fail_closed"},
            {"id": "big-charges", "title": "Charges over 10,000 need two people", "description": "", "when": "tool == 'payments.charge' && payload.amount > 10000", "effect": "require_dual", "on_error": "fail_closed"}
        ],
        "rules_sha256": "ab".repeat(32),
        "published_by": "usr_ada",
        "published_at": at(-3600),
    })
}

/// The Simulate screen, with the constitution in force read.
fn simulate(w: u16, h: u16) -> App {
    let mut a = app(w, h);
    a.update(Action::Net(NetMsg::Me(Ok(me("admin", PUBLISHER)))));
    keys(&mut a, "4");
    assert!(a.take_effects().contains(&super::action::Effect::FetchConstitution));
    a.update(Action::Net(NetMsg::Constitution(Ok(in_force()))));
    a
}

fn dry_run_answer() -> serde_json::Value {
    json!({
        "id": null, "status": "simulated", "payload_sha256": "9f".repeat(32), "required_approvals": 1,
        "trace": [
            {"stage": "authenticate", "verdict": "pass", "detail": "session of ada@acme.test"},
            {"stage": "scope", "verdict": "pass", "detail": "within the caller's tools"},
            {"stage": "workspace_kill_switch", "verdict": "pass", "detail": "not engaged"},
            {"stage": "tool_kill_switch", "verdict": "pass", "detail": "not engaged"},
            {"stage": "agent_write_control", "verdict": "pass", "detail": "a person's call"},
            {"stage": "constitution", "verdict": "pass", "detail": "no rule matched (version 3)"},
            {"stage": "confidence_gate", "verdict": "require_approval", "detail": "0.44 is below 0.6"},
            {"stage": "tool_policy", "verdict": "require_approval", "detail": "policy `approve`"},
            {"stage": "outcome", "verdict": "pending_approval (1)", "detail": ""}
        ],
        "cited_rules": [], "constitution_version": 3, "code": null, "message": "dry run: would need 1 approval"
    })
}

/// Moves the editor's cursor to the end of the first line containing `needle`.
fn to_line_end(a: &mut App, needle: &str) {
    let lines: Vec<String> = match a.simulate.mode {
        super::screens::simulate::Mode::DryRun => a.simulate.request.lines().to_vec(),
        super::screens::simulate::Mode::Draft => a.simulate.rules.lines().to_vec(),
    };
    let row = lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle}: {lines:?}"));
    for _ in 0..lines.len() {
        key(a, KeyCode::Up);
    }
    for _ in 0..row {
        key(a, KeyCode::Down);
    }
    key(a, KeyCode::End);
}

/// From the milestone approval: `s` opens a dry run of it; the due date is edited.
fn milestone_dry_run(w: u16, h: u16) -> App {
    let mut a = simulate(w, h);
    keys(&mut a, "1j");
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "s");
    assert_eq!(a.screen, super::app::Screen::Simulate);
    keys(&mut a, "e");
    to_line_end(&mut a, "\"due\": \"2026-12-14\"");
    for _ in 0..4 {
        key(&mut a, KeyCode::Backspace);
    }
    keys(&mut a, "31\",");
    a
}

scene!(simulate_empty, |a| {
    a.update(Action::Net(NetMsg::Me(Ok(me("admin", PUBLISHER)))));
    keys(&mut a, "4");
    a.update(Action::Net(NetMsg::Constitution(Ok(in_force()))));
});
scene!(simulate_tool_picker, |a| {
    let tools: Vec<crate::model::Tool> = serde_json::from_value(json!([
        {"name": "crm.read", "description": "", "kind": "read", "irreversible": false, "policy": "auto", "min_confidence": null, "approval_ttl_seconds": null, "connector": {"type": "record"}, "created_at": at(0), "updated_at": at(0)},
        {"name": "email.send", "description": "", "kind": "write", "irreversible": false, "policy": "approve", "min_confidence": null, "approval_ttl_seconds": null, "connector": {"type": "record"}, "created_at": at(0), "updated_at": at(0)}
    ]))
    .unwrap();
    a.update(Action::Net(NetMsg::Tools(Ok(tools))));
    keys(&mut a, "4t");
});

#[test]
fn simulate_invalid_json_shows_where_while_typing() {
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let mut a = milestone_dry_run(w, h);
        assert!(matches!(a.simulate.request_check, super::screens::simulate::Check::Ok(_)), "{:?}", a.simulate.request_check);
        // A stray character after the edited value.
        keys(&mut a, "x");
        match &a.simulate.request_check {
            super::screens::simulate::Check::Bad(e) => assert!(e.starts_with("line "), "{e}"),
            ok => panic!("{ok:?}"),
        }
        insta::assert_snapshot!(format!("simulate_invalid_json_{w}x{h}"), render(&a));
        // It is not sent.
        key(&mut a, KeyCode::F(5));
        assert!(a.take_effects().is_empty());
    }
}

#[test]
fn simulate_dry_run_of_an_edited_approval() {
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let mut a = milestone_dry_run(w, h);
        a.take_effects();
        key(&mut a, KeyCode::F(5));
        let effects = a.take_effects();
        let [super::action::Effect::DryRun { body, under_draft: false }] = effects.as_slice() else { panic!("{effects:?}") };
        assert_eq!(body["tool"], "milestones.update");
        assert_eq!(body["dry_run"], true);
        assert_eq!(body["payload"]["due"], "2026-12-31");
        assert_eq!(body["current"]["status"], "in_progress");
        assert_eq!(body["confidence"], 0.44);
        assert_eq!(body["resource"], "milestone:42");
        let sent = body["payload"].clone();
        a.update(Action::Net(NetMsg::DryRun { under_draft: false, sent, result: Ok(dry_run_answer()) }));
        // The answer does not take the keys away from the editor.
        assert!(a.simulate.editing);
        key(&mut a, KeyCode::Esc);
        let screen = render(&a).to_string();
        insta::assert_snapshot!(format!("simulate_dry_run_result_{w}x{h}"), screen);
        // The edit reads as a diff against the original payload (scrolled into view).
        keys(&mut a, "jjjjjjjjjjjjjjjj");
        let text = render(&a).to_string();
        assert!(text.contains(r#"-   "due": "2026-12-14","#) && text.contains(r#"+   "due": "2026-12-31","#), "{text}");
    }
}

scene!(simulate_draft_rules, |a| {
    a.update(Action::Net(NetMsg::Me(Ok(me("admin", PUBLISHER)))));
    keys(&mut a, "4");
    a.update(Action::Net(NetMsg::Constitution(Ok(in_force()))));
    keys(&mut a, "l");
});

#[test]
fn simulate_draft_compile_error_names_the_rule_and_position() {
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let mut a = simulate(w, h);
        keys(&mut a, "le");
        to_line_end(&mut a, "payload.amount > 10000");
        // `payload.amount > 10000"` → `… > 10000 &&"`: a dangling operator.
        key(&mut a, KeyCode::Left);
        keys(&mut a, " &&");
        let check = match &a.simulate.rules_check {
            super::screens::simulate::Check::Bad(e) => e.clone(),
            ok => panic!("{ok:?}"),
        };
        assert!(check.contains("rule `big-charges`") && check.contains("column"), "{check}");
        insta::assert_snapshot!(format!("simulate_draft_compile_error_{w}x{h}"), render(&a));
        key(&mut a, KeyCode::Esc);
        keys(&mut a, "rP");
        assert!(a.take_effects().is_empty(), "nothing runs or publishes while the draft does not compile");
    }
}

fn whatif_answer() -> serde_json::Value {
    let side = |status: &str, n: i64, code: Option<&str>, cited: serde_json::Value| json!({"status": status, "required_approvals": n, "code": code, "cited_rules": cited});
    let rule = json!([{"rule_id": "no-rival-mail", "title": "No mail to rival.com", "effect": "deny"}]);
    json!({
        "window": {"last": 1000, "since": null, "scope": "workspace", "newest_action_id": "act_9", "oldest_action_id": "act_1", "complete": true, "stopped_by": null},
        "in_force_version": 3,
        "totals": {"replayed": 1000, "skipped": 0, "changed": 3, "stricter": 3, "looser": 0, "newly_need_approval": 1, "newly_need_dual": 0,
                   "newly_denied": 2, "no_longer_denied": 0, "newly_run_at_once": 0, "citations_changed": 0, "rule_errors_before": 0, "rule_errors_after": 0},
        "changes": [
            {"action_id": "act_9", "tool": "email.send", "created_at": at(-60), "recorded_status": "executed", "requester_id": "usr_ada", "agent_token_id": "tok_billing",
             "before": side("executed", 0, None, json!([])), "after": side("denied", 0, Some("constitution_denied"), rule.clone())},
            {"action_id": "act_7", "tool": "email.send", "created_at": at(-600), "recorded_status": "pending_approval", "requester_id": "usr_ada", "agent_token_id": null,
             "before": side("pending_approval", 1, None, json!([])), "after": side("denied", 0, Some("constitution_denied"), rule)},
            {"action_id": "act_2", "tool": "crm.read", "created_at": at(-7200), "recorded_status": "executed", "requester_id": "usr_ada", "agent_token_id": null,
             "before": side("executed", 0, None, json!([])), "after": side("pending_approval", 1, None, json!([]))}
        ],
        "truncated": false, "not_applied": ["scope", "workspace_kill_switch", "tool_kill_switch", "agent_write_control"], "elapsed_ms": 41
    })
}

/// The draft with one more rule appended (as typed at the end of the list).
fn with_new_rule(a: &mut App) {
    keys(a, "le");
    to_line_end(a, "\"on_error\": \"fail_closed\"");
    // The end of the second rule: past its `}`.
    let last = a.simulate.rules.lines().iter().rposition(|l| l.trim() == "}").unwrap();
    for _ in 0..a.simulate.rules.lines().len() {
        key(a, KeyCode::Up);
    }
    for _ in 0..last {
        key(a, KeyCode::Down);
    }
    key(a, KeyCode::End);
    a.update(Action::Paste(
        r#", {"id": "no-rival-mail", "title": "No mail to rival.com", "when": "tool == 'email.send' && payload.to.exists(r, r.endsWith('@rival.com'))", "effect": "deny"}"#
            .into(),
    ));
    key(a, KeyCode::Esc);
}

#[test]
fn simulate_what_if_lists_what_would_change_and_why() {
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let mut a = simulate(w, h);
        with_new_rule(&mut a);
        assert!(
            matches!(&a.simulate.rules_check, super::screens::simulate::Check::Ok(m) if m == "3 rules compile"),
            "{:?}",
            a.simulate.rules_check
        );
        keys(&mut a, "wr");
        let effects = a.take_effects();
        let [super::action::Effect::WhatIf(body)] = effects.as_slice() else { panic!("{effects:?}") };
        assert_eq!(body["window"]["last"], 10_000);
        assert_eq!(body["draft"]["rules"].as_array().unwrap().len(), 3);
        a.update(Action::Net(NetMsg::WhatIf(Ok(whatif_answer()))));
        insta::assert_snapshot!(format!("simulate_what_if_{w}x{h}"), render(&a));
        keys(&mut a, "j");
        key(&mut a, KeyCode::Enter);
        let why = render(&a).to_string();
        assert!(why.contains("act_7") && why.contains("cites `no-rival-mail` (deny)"), "{why}");
        insta::assert_snapshot!(format!("simulate_what_if_why_{w}x{h}"), why);
    }
}

#[test]
fn simulate_publish_confirms_the_version_diff_and_sends_the_base_version() {
    for (w, h) in [(80u16, 24u16), (120, 40)] {
        let mut a = simulate(w, h);
        with_new_rule(&mut a);
        keys(&mut a, "P");
        let screen = render(&a).to_string();
        assert!(screen.contains("Publish version 4") && screen.contains("added: no-rival-mail"), "{screen}");
        insta::assert_snapshot!(format!("simulate_publish_confirmation_{w}x{h}"), screen);
        keys(&mut a, "y");
        let effects = a.take_effects();
        let [super::action::Effect::Publish { rules, base_version: 3 }] = effects.as_slice() else { panic!("{effects:?}") };
        assert_eq!(rules.len(), 3);
    }
}

#[test]
fn a_viewer_sees_publish_disabled_and_is_told_why() {
    let mut a = simulate(80, 24);
    a.update(Action::Net(NetMsg::Me(Ok(me("viewer", &["constitution:read", "actions:simulate"])))));
    with_new_rule(&mut a);
    keys(&mut a, "P");
    assert!(a.dialog.is_none());
    assert!(a.take_effects().is_empty());
    let screen = render(&a).to_string();
    assert!(screen.contains("You cannot publish the constitution: your role (viewer)"), "{screen}");
    // Read whole at 80 columns: wrapped above the footer, not cut at the edge.
    let text = a.toast.as_ref().expect("a toast").text.clone();
    assert!(text.len() > 80, "{text}");
    let shown: Vec<&str> = screen.lines().map(|l| l.trim_matches('"').trim()).collect();
    let joined = shown.join(" ");
    assert!(joined.contains(&text), "the whole refusal is on screen:\n{screen}");
}

#[test]
fn long_messages_wrap_between_words_within_three_lines() {
    use super::widgets::wrap;
    assert_eq!(wrap("grants none of `constitution:publish`.", 20, 3), ["grants none of", "`constitution:publis", "h`."]);
    assert_eq!(wrap("a b c d e f", 3, 2), ["a b", "c …"]);
    assert_eq!(wrap("abcdef ghi", 3, 2), ["abc", "de…"]);
    assert_eq!(wrap("  ", 10, 3), Vec::<String>::new());
    assert_eq!(wrap("fits", 10, 3), ["fits"]);
}

#[test]
fn rule_from_an_approval_opens_the_drafted_rule_in_simulate() {
    let mut a = simulate(120, 40);
    // The mail: last in the queue, which is soonest expiry first.
    keys(&mut a, "1");
    keys(&mut a, "jj");
    key(&mut a, KeyCode::Enter);
    a.take_effects();
    keys(&mut a, "R");
    let effects = a.take_effects();
    assert_eq!(effects, vec![super::action::Effect::DraftFromAction("act_apv_mail".into())]);
    let mut rules = in_force()["rules"].as_array().unwrap().clone();
    let rule = json!({"id": "email-send-northwind-example", "title": "email.send to @northwind.example: needs approval", "description": "Drafted from action act_apv_mail",
                      "when": "tool == 'email.send' && payload.to.exists(r, r.endsWith('@northwind.example'))", "effect": "require_approval", "on_error": "fail_closed"});
    rules.push(rule.clone());
    a.update(Action::Net(NetMsg::Drafted(Ok(json!({
        "action_id": "act_apv_mail", "rule": rule, "explanation": ["the tool is `email.send`"], "matches_action": true, "base_version": 3, "draft": {"rules": rules}
    })))));
    assert_eq!(a.screen, super::app::Screen::Simulate);
    assert_eq!(a.simulate.mode, super::screens::simulate::Mode::Draft);
    assert!(a.simulate.dirty);
    assert_eq!(a.simulate.base_version, 3);
    insta::assert_snapshot!("simulate_rule_from_approval_120x40", render(&a));
}

#[test]
fn a_drafted_rule_never_replaces_an_edited_draft_that_does_not_parse() {
    let mut a = simulate(80, 24);
    keys(&mut a, "le");
    a.update(Action::Paste("{ not json".into()));
    key(&mut a, KeyCode::Esc);
    assert!(a.simulate.dirty);
    let edited = a.simulate.rules.lines().join("\n");
    let rule = json!({"id": "drafted", "title": "t", "when": "true", "effect": "deny"});
    a.update(Action::Net(NetMsg::Drafted(Ok(
        json!({"action_id": "act_1", "rule": rule, "matches_action": true, "base_version": 3, "draft": {"rules": [rule]}}),
    ))));
    assert_eq!(a.simulate.rules.lines().join("\n"), edited, "the edits are kept");
    assert!(render(&a).to_string().contains("does not parse, so `drafted` was not added"));
}

/// The new screens in the 16-colour theme and without colour: what they mark still reads.
#[test]
fn simulate_and_access_in_sixteen_colours_and_no_color() {
    for (name, theme) in [("ansi16", Theme::built_in("ansi16").unwrap()), ("no_color", Theme::monochrome())] {
        let mut a = simulate(80, 24);
        a.theme = theme.clone();
        with_new_rule(&mut a);
        keys(&mut a, "r");
        a.update(Action::Net(NetMsg::WhatIf(Ok(whatif_answer()))));
        insta::assert_snapshot!(format!("theme_{name}_simulate_what_if_80x24"), styled(&render(&a)));
        let mut a = milestone_dry_run(80, 24);
        a.theme = theme.clone();
        key(&mut a, KeyCode::F(5));
        key(&mut a, KeyCode::Esc);
        let sent = match a.take_effects().as_slice() {
            [super::action::Effect::DryRun { body, .. }] => body["payload"].clone(),
            other => panic!("{other:?}"),
        };
        a.update(Action::Net(NetMsg::DryRun { under_draft: false, sent, result: Ok(dry_run_answer()) }));
        insta::assert_snapshot!(format!("theme_{name}_simulate_dry_run_80x24"), styled(&render(&a)));
        let mut a = app(80, 24);
        a.theme = theme.clone();
        with_access(&mut a);
        keys(&mut a, "ll");
        insta::assert_snapshot!(format!("theme_{name}_access_tokens_80x24"), styled(&render(&a)));
    }
}

#[test]
fn a_dry_run_that_would_run_at_once_reads_as_good_news() {
    let mut a = milestone_dry_run(120, 40);
    key(&mut a, KeyCode::F(5));
    a.take_effects();
    let mut answer = dry_run_answer();
    let trace = answer["trace"].as_array_mut().unwrap();
    trace.retain(|st| st["stage"] != "confidence_gate" && st["stage"] != "outcome");
    trace.last_mut().unwrap()["verdict"] = json!("pass");
    trace.push(json!({"stage": "outcome", "verdict": "execute", "detail": ""}));
    a.update(Action::Net(NetMsg::DryRun { under_draft: false, sent: json!({}), result: Ok(answer) }));
    let b = render(&a);
    let text = b.to_string();
    assert!(text.contains("Would be: executed at once"), "{text}");
    let (y, x) = text.lines().enumerate().find_map(|(y, l)| l.find("executed at once").map(|x| (y, l[..x].chars().count()))).unwrap();
    assert_eq!(b.buffer()[(x as u16, y as u16)].fg, a.theme.ok.fg.unwrap(), "drawn in the theme's ok colour");
}

scene!(audit_export_form, |a| {
    keys(&mut a, "2e");
});
scene!(audit_exported, |a| {
    keys(&mut a, "2");
    let path = std::path::PathBuf::from("/home/ada/countersign-audit-acme-20261123-100000.jsonl");
    super::screens::audit::start_export(&mut a, path.clone(), Format::Jsonl);
    let done = crate::export_file::Downloaded { path, bytes: 9_216, head_seq: Some(12), complete: true };
    a.update(Action::Net(NetMsg::Exported(Ok(done))));
});

/// A console started in a directory of its own, on the Audit screen.
fn exporting_from(dir: &std::path::Path) -> App {
    let mut a = app(80, 24);
    a.cwd = dir.to_path_buf();
    keys(&mut a, "2");
    a
}

fn ctrl(app: &mut App, c: char) {
    app.update(Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)));
}

#[test]
fn an_export_is_named_for_the_workspace_and_the_time_and_goes_where_the_console_started() {
    use super::action::Effect;
    let dir = tempfile::tempdir().unwrap();
    let mut a = exporting_from(dir.path());
    keys(&mut a, "e");
    ctrl(&mut a, 's');
    let effects = a.take_effects();
    let expected = dir.path().join("countersign-audit-acme-20261123-100000.jsonl");
    assert!(effects.contains(&Effect::ExportAudit { path: expected.clone(), format: Format::Jsonl }), "{effects:?}");
    assert!(a.toast.as_ref().is_some_and(|t| t.text.contains("Exporting the whole audit log")));

    // While it runs, a second one is refused rather than racing the first.
    keys(&mut a, "e");
    assert!(a.dialog.is_none());
    assert!(a.toast.as_ref().is_some_and(|t| t.error && t.text.contains("still running")), "{:?}", a.toast);

    // CSV: the default name takes the format's extension; a name typed is used as given.
    a.audit.exporting = None;
    keys(&mut a, "e");
    key(&mut a, KeyCode::Tab);
    key(&mut a, KeyCode::Right);
    ctrl(&mut a, 's');
    let csv = dir.path().join("countersign-audit-acme-20261123-100000.csv");
    assert!(a.take_effects().contains(&Effect::ExportAudit { path: csv, format: Format::Csv }));
    a.audit.exporting = None;
    keys(&mut a, "e");
    keys(&mut a, "incident-42.jsonl");
    ctrl(&mut a, 's');
    let named = dir.path().join("incident-42.jsonl");
    assert!(a.take_effects().contains(&Effect::ExportAudit { path: named, format: Format::Jsonl }));
}

#[test]
fn an_export_never_replaces_a_file_nor_writes_where_there_is_no_directory() {
    use super::dialogs::Dialog;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("evidence.jsonl"), "kept").unwrap();
    let mut a = exporting_from(dir.path());
    keys(&mut a, "e");
    keys(&mut a, "evidence.jsonl");
    ctrl(&mut a, 's');
    let Some(Dialog::Form(f)) = &a.dialog else { panic!("the form stays open") };
    assert!(f.error.as_deref().is_some_and(|e| e.contains("already exists")), "{:?}", f.error);
    for _ in 0.."evidence.jsonl".len() {
        key(&mut a, KeyCode::Backspace);
    }
    keys(&mut a, "missing/evidence.jsonl");
    ctrl(&mut a, 's');
    let Some(Dialog::Form(f)) = &a.dialog else { panic!("the form stays open") };
    assert!(f.error.as_deref().is_some_and(|e| e.contains("There is no directory")), "{:?}", f.error);
    assert!(!a.take_effects().iter().any(|e| matches!(e, super::action::Effect::ExportAudit { .. })));
    assert_eq!(std::fs::read_to_string(dir.path().join("evidence.jsonl")).unwrap(), "kept");
}

#[test]
fn exporting_needs_audit_export_and_a_failure_says_nothing_was_written() {
    use super::dialogs::Dialog;
    let mut a = app(80, 24);
    a.update(Action::Net(NetMsg::Me(Ok(me("viewer", &["approvals:read", "audit:read"])))));
    keys(&mut a, "2e");
    assert!(a.dialog.is_none());
    assert!(a.toast.as_ref().is_some_and(|t| t.error && t.text.contains("`audit:export`")), "{:?}", a.toast);

    let mut a = app(80, 24);
    let path = std::path::PathBuf::from("/home/ada/audit.jsonl");
    super::screens::audit::start_export(&mut a, path, Format::Jsonl);
    a.update(Action::Net(NetMsg::Exported(Err(crate::client::ClientError::Local("the export was cut off before its end".into())))));
    let Some(Dialog::Message(m)) = &a.dialog else { panic!("a message says what happened") };
    assert!(m.bad && m.lines[0].contains("Nothing was written to /home/ada/audit.jsonl"), "{:?}", m.lines);
    assert!(a.audit.exporting.is_none(), "another export may start");
}

#[test]
fn an_approval_that_leaves_the_queue_while_read_closes_its_detail_instead_of_showing_another() {
    use super::action::Effect;
    let mut a = app(80, 24);
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "jjjjj");
    assert!(a.approvals.open && a.approvals.scroll > 0);
    let read = a.approvals.current().unwrap().id.clone();
    keys(&mut a, "ay");
    assert!(a.take_effects().iter().any(|e| matches!(e, Effect::Decide { id, .. } if *id == read)));
    // Approved: it leaves the pending queue.
    let left: Vec<Approval> = approvals().into_iter().filter(|x| x.id != read).collect();
    a.update(Action::Net(NetMsg::Approvals(Ok(left))));
    assert!(!a.approvals.open, "back to the queue, not into another approval");
    assert_eq!(a.approvals.scroll, 0);
    assert_ne!(a.approvals.current().map(|x| x.id.clone()), Some(read));
    // `g` in a detail goes to its top; it never picks another approval.
    key(&mut a, KeyCode::Enter);
    let open = a.approvals.current().unwrap().id.clone();
    keys(&mut a, "jjjg");
    assert_eq!((a.approvals.scroll, a.approvals.current().unwrap().id.clone()), (0, open));
}

#[test]
fn approving_a_stopped_tool_says_it_cannot_run_and_the_queue_marks_it() {
    use super::dialogs::Dialog;
    let mut a = app(80, 24);
    a.update(Action::Net(NetMsg::Switches(Ok(switches(true)))));
    while a.approvals.current().unwrap().tool != "email.send" {
        keys(&mut a, "j");
    }
    keys(&mut a, "a");
    let Some(Dialog::Confirm(c)) = &a.dialog else { panic!("a confirmation") };
    assert!(
        c.lines.iter().any(|l| l.contains("email.send is stopped by a kill switch (bad template sent twice)") && l.contains("cannot run")),
        "{:?}",
        c.lines
    );
    key(&mut a, KeyCode::Esc);
    assert!(render(&a).to_string().contains("■ email.send"), "the queue marks the stopped tool");
}

#[test]
fn access_is_read_again_when_opened_and_on_ctrl_r() {
    use super::action::Effect;
    let mut a = app(80, 24);
    with_access(&mut a);
    a.take_effects();
    keys(&mut a, "1");
    keys(&mut a, "3");
    assert!(a.take_effects().contains(&Effect::FetchAccess), "opening Access reads it again");
    ctrl(&mut a, 'r');
    assert!(a.take_effects().contains(&Effect::FetchAccess), "ctrl-r reads it again");
}

#[test]
fn slash_where_nothing_filters_says_so_and_types_nothing_and_messages_stay_on_their_screen() {
    let mut a = app(80, 24);
    keys(&mut a, "5/");
    assert!(a.input.is_none());
    assert!(a.toast.as_ref().is_some_and(|t| t.text.contains("nothing to filter here")), "{:?}", a.toast);
    keys(&mut a, "K");
    assert!(a.dialog.is_some(), "the next key is a key, not text typed into a filter that is not there");
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "1");
    assert!(a.toast.is_none(), "a message about the Switches screen does not follow you");
}

#[test]
fn the_audit_filter_finds_a_tool_and_an_outcome_it_does_not_show_at_80_columns() {
    let mut a = app(80, 24);
    keys(&mut a, "2/email");
    assert_eq!(a.audit.len(), 12, "every event of the sample is about email.send");
    key(&mut a, KeyCode::Esc);
    // An outcome no event type spells: only the outcome can match it.
    let last = events(12).pop().unwrap();
    let draft =
        EventDraft::new("action.failed", Actor::agent("tok_billing"), Via::Agent).outcome("failure").data(json!({"tool": "crm.read"}));
    let failed = AuditEvent::seal(draft, "org_1", 12, &last.hash, crate::clock::format_ts(now()));
    a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(failed)))));
    keys(&mut a, "/failure");
    assert_eq!(a.audit.len(), 1, "outcome: failure");
    assert_eq!(&*a.audit.current().unwrap().event_type, "action.failed");
}

#[test]
fn a_new_member_is_a_member_unless_chosen_otherwise_and_a_bad_address_is_named() {
    use super::dialogs::Dialog;
    let mut a = app(80, 24);
    with_access(&mut a);
    keys(&mut a, "n");
    let Some(Dialog::Form(f)) = &a.dialog else { panic!("the form") };
    assert_eq!(f.choice(2), "member");
    keys(&mut a, "newbie");
    ctrl(&mut a, 's');
    let Some(Dialog::Form(f)) = &a.dialog else { panic!("the form stays open") };
    assert_eq!(f.error.as_deref(), Some("`newbie` is not an e-mail address (like ada@example.com)."));
}

#[test]
fn a_decision_half_made_on_an_approval_that_leaves_the_queue_is_closed_and_says_why() {
    let mut a = app(80, 24);
    let first = a.approvals.current().unwrap().id.clone();
    keys(&mut a, "a");
    assert!(a.dialog.is_some());
    let left: Vec<Approval> = approvals().into_iter().filter(|x| x.id != first).collect();
    a.update(Action::Net(NetMsg::Approvals(Ok(left.clone()))));
    assert!(a.dialog.is_none());
    assert!(a.toast.as_ref().is_some_and(|t| t.error && t.text.contains("no longer pending")), "{:?}", a.toast);
    // A change elsewhere in the queue leaves a decision alone.
    keys(&mut a, "d");
    a.update(Action::Net(NetMsg::Approvals(Ok(left))));
    assert!(a.dialog.is_some(), "its approval is still pending");
}

#[test]
fn the_palette_says_what_could_follow_and_ctrl_u_clears_a_line() {
    let mut a = app(80, 24);
    keys(&mut a, ":a");
    key(&mut a, KeyCode::Tab);
    let Some(super::app::Input::Palette { text, error }) = &a.input else { panic!("the palette") };
    assert_eq!(text, "a");
    assert_eq!(error.as_deref(), Some("one of: approvals, audit, access"));
    keys(&mut a, "u");
    key(&mut a, KeyCode::Tab);
    assert!(matches!(&a.input, Some(super::app::Input::Palette { text, error: None }) if text == "audit"));
    ctrl(&mut a, 'u');
    assert!(matches!(&a.input, Some(super::app::Input::Palette { text, .. }) if text.is_empty()));
    key(&mut a, KeyCode::Esc);
    keys(&mut a, "2/approval");
    assert!(a.audit.len() < 12);
    ctrl(&mut a, 'u');
    assert!(matches!(&a.input, Some(super::app::Input::Filter(f)) if f.is_empty()));
    assert_eq!(a.audit.len(), 12, "the filter is cleared as the line is");
}

#[test]
fn quitting_while_an_export_runs_asks_first_and_g_ends_a_detail() {
    use super::dialogs::Dialog;
    let mut a = app(80, 24);
    let path = std::path::PathBuf::from("/home/ada/audit.jsonl");
    super::screens::audit::start_export(&mut a, path, Format::Jsonl);
    keys(&mut a, "q");
    let Some(Dialog::Confirm(c)) = &a.dialog else { panic!("a confirmation") };
    assert!(c.lines[0].contains("/home/ada/audit.jsonl"), "{:?}", c.lines);
    assert!(!a.quit);
    keys(&mut a, "n");
    assert!(!a.quit && a.dialog.is_none());

    keys(&mut a, "1");
    key(&mut a, KeyCode::Enter);
    keys(&mut a, "G");
    assert!(a.approvals.scroll > 0 && a.approvals.open, "the end of the detail, not the last approval");
}

#[test]
fn an_export_the_server_did_not_mark_complete_is_not_said_to_verify() {
    use super::dialogs::Dialog;
    let mut a = app(80, 24);
    let path = std::path::PathBuf::from("/home/ada/audit.jsonl");
    super::screens::audit::start_export(&mut a, path.clone(), Format::Jsonl);
    let done = crate::export_file::Downloaded { path, bytes: 10, head_seq: Some(12), complete: false };
    a.update(Action::Net(NetMsg::Exported(Ok(done))));
    let Some(Dialog::Message(m)) = &a.dialog else { panic!("a message") };
    assert!(m.lines.iter().any(|l| l.contains("will not verify")), "{:?}", m.lines);
    assert!(!m.lines.iter().any(|l| l.contains("verify --file")), "{:?}", m.lines);
}
