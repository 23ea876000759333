//! Every key binding, in one place: what each key means on each screen, and the help
//! text the footer and the `?` overlay show for it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::Screen;

/// A key's meaning, independent of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Quit,
    Help,
    Palette,
    Filter,
    Up,
    Down,
    Top,
    Bottom,
    PageDown,
    PageUp,
    Open,
    Back,
    Approve,
    Deny,
    Kill,
    Lift,
    PauseTail,
    Verify,
    /// Audit: export the whole log to a file.
    Export,
    Refresh,
    Screen(Screen),
    NextScreen,
    PrevScreen,
    TabLeft,
    TabRight,
    New,
    Edit,
    Remove,
    Rotate,
    Transfer,
    /// Simulate: run the dry run or the what-if.
    Run,
    /// Simulate: publish the draft constitution.
    Publish,
    /// Simulate: choose the tool of a dry run.
    PickTool,
    /// Simulate: how many recorded actions a what-if replays.
    Window,
    /// Approvals: dry-run the selected action in Simulate.
    SimulateThis,
    /// Approvals: draft a rule from the selected action in Simulate.
    RuleFromThis,
}

/// The commands a user may rebind in config.toml: (name, default key, what it does).
pub const REBINDABLE: &[(&str, &str, &str)] = &[
    ("quit", "q", "quit"),
    ("help", "?", "the help overlay"),
    ("palette", ":", "the command palette"),
    ("filter", "/", "filter the list"),
    ("approve", "a", "approve the selected approval"),
    ("deny", "d", "deny the selected approval"),
    ("kill", "K", "the kill-switch dialog"),
    ("pause", "space", "pause or follow the audit tail"),
    ("verify", "v", "verify the audit chain"),
    ("export", "e", "export the whole audit log to a file (Audit)"),
    ("lift", "l", "lift the selected kill switch"),
    ("refresh", "ctrl-r", "fetch everything again"),
    ("new", "n", "add a member, role or token"),
    ("edit", "e", "edit the selected member or role"),
    ("remove", "x", "deactivate, delete or revoke"),
    ("rotate", "r", "rotate the selected token"),
    ("transfer", "O", "transfer ownership"),
    ("run", "r", "run the dry run or what-if (Simulate)"),
    ("publish", "P", "publish the draft constitution (Simulate)"),
    ("tool", "t", "choose the dry run's tool (Simulate)"),
    ("window", "w", "how many actions what-if replays (Simulate)"),
    ("simulate", "s", "dry-run the selected approval's action"),
    ("rule", "R", "draft a rule from the selected approval's action"),
];

fn by_name(name: &str) -> Option<Command> {
    use Command::*;
    Some(match name {
        "quit" => Quit,
        "help" => Help,
        "palette" => Palette,
        "filter" => Filter,
        "approve" => Approve,
        "deny" => Deny,
        "kill" => Kill,
        "pause" => PauseTail,
        "verify" => Verify,
        "export" => Export,
        "lift" => Lift,
        "refresh" => Refresh,
        "new" => New,
        "edit" => Edit,
        "remove" => Remove,
        "rotate" => Rotate,
        "transfer" => Transfer,
        "run" => Run,
        "publish" => Publish,
        "tool" => PickTool,
        "window" => Window,
        "simulate" => SimulateThis,
        "rule" => RuleFromThis,
        _ => return None,
    })
}

/// Parses `a`, `A`, `space`, `ctrl-x`, `f5`, `enter`, `esc`, `tab`.
pub fn parse_key(s: &str) -> Option<(KeyCode, bool)> {
    let (ctrl, rest) = match s.strip_prefix("ctrl-") {
        Some(r) => (true, r),
        None => (false, s),
    };
    let code = match rest {
        "space" => KeyCode::Char(' '),
        "enter" => KeyCode::Enter,
        "esc" => KeyCode::Esc,
        "tab" => KeyCode::Tab,
        f if f.len() >= 2 && f.starts_with('f') && f[1..].parse::<u8>().is_ok() => KeyCode::F(f[1..].parse().ok()?),
        c if c.chars().count() == 1 => KeyCode::Char(c.chars().next()?),
        _ => return None,
    };
    Some((code, ctrl))
}

/// The user's rebindings: key → command, and the commands whose defaults they replace.
#[derive(Default)]
struct Overrides {
    keys: Vec<((KeyCode, bool), Command)>,
    replaced: Vec<Command>,
}

static OVERRIDES: std::sync::OnceLock<Overrides> = std::sync::OnceLock::new();

/// Installs the rebindings from config.toml's `[keys]`, once, at start. Unknown command
/// names or keys are errors, reported before the console opens.
pub fn set_overrides(map: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    let _ = OVERRIDES.set(build_overrides(map)?);
    Ok(())
}

/// Checks and collects the rebindings. A rebinding applies on every screen, so a key may
/// not be given to two commands, nor to one while it is still another rebindable command's
/// default (that command would be shadowed wherever both apply).
fn build_overrides(map: &std::collections::BTreeMap<String, String>) -> Result<Overrides, String> {
    let mut o = Overrides::default();
    let mut taken: Vec<(&(KeyCode, bool), &str)> = Vec::new();
    let parsed: Vec<(String, Command, (KeyCode, bool), &str)> = map
        .iter()
        .map(|(name, key)| {
            let cmd = by_name(name)
                .ok_or_else(|| format!("config.toml [keys]: `{name}` is not a command; `countersign config keys` lists them"))?;
            let k = parse_key(key).ok_or_else(|| format!("config.toml [keys]: `{key}` is not a key (try `a`, `ctrl-k`, `f5`, `space`)"))?;
            Ok((name.clone(), cmd, k, key.as_str()))
        })
        .collect::<Result<_, String>>()?;
    for (name, _, k, key) in &parsed {
        if let Some((_, other)) = taken.iter().find(|(k2, _)| *k2 == k) {
            return Err(format!("config.toml [keys]: `{key}` is given to both `{other}` and `{name}`"));
        }
        if let Some((other, _, _)) = REBINDABLE
            .iter()
            .find(|(other, default, _)| other != name && parse_key(default).as_ref() == Some(k) && !map.contains_key(*other))
        {
            return Err(format!(
                "config.toml [keys]: `{key}` is already `{other}`'s key; rebind `{other}` too, or choose another key for `{name}`"
            ));
        }
        taken.push((k, name));
    }
    for (_, cmd, k, _) in parsed {
        o.keys.push((k, cmd));
        o.replaced.push(cmd);
    }
    Ok(o)
}

/// Maps a key to its command on `screen`. Dialogs and text inputs see keys first.
pub fn command(screen: Screen, key: KeyEvent) -> Option<Command> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if let Some(o) = OVERRIDES.get() {
        if let Some((_, cmd)) = o.keys.iter().find(|((code, c), _)| *code == key.code && *c == ctrl) {
            return Some(*cmd);
        }
        return default_command(screen, key).filter(|c| !o.replaced.contains(c));
    }
    default_command(screen, key)
}

fn default_command(screen: Screen, key: KeyEvent) -> Option<Command> {
    use Command::*;
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match (key.code, ctrl) {
        (KeyCode::Char('c'), true) => Quit,
        (KeyCode::Char('d'), true) => PageDown,
        (KeyCode::Char('u'), true) => PageUp,
        (KeyCode::Char('r'), true) => Refresh,
        (KeyCode::Char('q'), false) => Quit,
        (KeyCode::Char('?'), _) => Help,
        (KeyCode::Char(':'), _) => Palette,
        (KeyCode::Char('/'), _) => Filter,
        (KeyCode::Char('k'), false) | (KeyCode::Up, _) => Up,
        (KeyCode::Char('j'), false) | (KeyCode::Down, _) => Down,
        (KeyCode::Char('g'), false) | (KeyCode::Home, _) => Top,
        (KeyCode::Char('G'), _) | (KeyCode::End, _) => Bottom,
        (KeyCode::PageDown, _) => PageDown,
        (KeyCode::PageUp, _) => PageUp,
        (KeyCode::Enter, _) => Open,
        (KeyCode::Esc, _) => Back,
        (KeyCode::Char('K'), _) => Kill,
        (KeyCode::Tab, _) => NextScreen,
        (KeyCode::BackTab, _) => PrevScreen,
        (KeyCode::Char(c @ '1'..='5'), false) => Screen(super::app::Screen::ALL[(c as u8 - b'1') as usize]),
        // On every screen, as the brief's keys are: elsewhere they act on the approval
        // the selection is about, if any (see `App::decide_from_here`).
        (KeyCode::Char('a'), false) => Approve,
        (KeyCode::Char('d'), false) => Deny,
        (KeyCode::Char(' '), _) if screen == super::app::Screen::Audit => PauseTail,
        (KeyCode::Char('v'), false) if screen == super::app::Screen::Audit => Verify,
        (KeyCode::Char('e'), false) if screen == super::app::Screen::Audit => Export,
        (KeyCode::Char('l'), false) if screen == super::app::Screen::Switches => Lift,
        (KeyCode::Left | KeyCode::Char('h'), false) if screen == super::app::Screen::Access => TabLeft,
        (KeyCode::Right | KeyCode::Char('l'), false) if screen == super::app::Screen::Access => TabRight,
        (KeyCode::Char('n'), false) if screen == super::app::Screen::Access => New,
        (KeyCode::Char('e'), false) if screen == super::app::Screen::Access => Edit,
        (KeyCode::Char('x'), false) if screen == super::app::Screen::Access => Remove,
        (KeyCode::Char('r'), false) if screen == super::app::Screen::Access => Rotate,
        (KeyCode::Char('O'), _) if screen == super::app::Screen::Access => Transfer,
        (KeyCode::Char('s'), false) if screen == super::app::Screen::Approvals => SimulateThis,
        (KeyCode::Char('R'), _) if screen == super::app::Screen::Approvals => RuleFromThis,
        (KeyCode::Left | KeyCode::Char('h'), false) if screen == super::app::Screen::Simulate => TabLeft,
        (KeyCode::Right | KeyCode::Char('l'), false) if screen == super::app::Screen::Simulate => TabRight,
        (KeyCode::Char('e'), false) if screen == super::app::Screen::Simulate => Edit,
        (KeyCode::Char('r'), false) | (KeyCode::F(5), _) if screen == super::app::Screen::Simulate => Run,
        (KeyCode::Char('P'), _) if screen == super::app::Screen::Simulate => Publish,
        (KeyCode::Char('t'), false) if screen == super::app::Screen::Simulate => PickTool,
        (KeyCode::Char('w'), false) if screen == super::app::Screen::Simulate => Window,
        _ => return None,
    })
}

/// (keys, what they do) for the `?` overlay, per screen.
pub fn help(screen: Screen) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![
        ("1–5 tab S-tab", "switch screens"),
        ("j k ↑ ↓", "move"),
        ("g G", "first, last"),
        ("ctrl-d ctrl-u", "page down, up"),
        (":", "commands, tab lists all: kill TOOL, lift, tokens, theme"),
        ("a d", "approve, deny (on Audit: the event's approval)"),
        ("K", "kill switch: stop a tool or everything"),
        ("ctrl-r", "fetch everything again"),
        ("?", "this help"),
        ("q ctrl-c", "quit"),
    ];
    let screen_keys: &[(&str, &str)] = match screen {
        Screen::Approvals => &[
            ("enter", "open the approval"),
            ("esc", "back to the queue"),
            ("/", "filter by tool, agent, requester, resource"),
            ("a", "approve (asks to confirm)"),
            ("d", "deny (asks for a reason)"),
            ("s", "dry-run this action in Simulate"),
            ("R", "draft a rule from this action in Simulate"),
        ],
        Screen::Audit => &[
            ("space", "pause / follow the tail"),
            ("/", "filter: words, type:approval.*, actor:, tool:, outcome:"),
            ("enter", "open the event"),
            ("esc", "back"),
            ("v", "verify the chain"),
            ("e", "export the whole log to a file (JSONL or CSV)"),
        ],
        Screen::Switches => &[("K", "engage a switch"), ("l", "lift the selected switch")],
        Screen::Access => &[
            ("← → h l", "members, roles, tokens"),
            ("n", "add a member, role or token"),
            ("e", "change a member's role, a role's permissions"),
            ("x", "deactivate, delete, revoke"),
            ("r", "rotate a token"),
            ("O", "transfer ownership (owner)"),
        ],
        Screen::Simulate => &[
            ("← → h l", "dry run, draft rules"),
            ("t", "choose the dry run's tool"),
            ("e enter", "edit the request or the rules"),
            ("esc", "stop editing"),
            ("r F5", "run: the dry run, or what-if"),
            ("w", "what-if over the last 100 / 1,000 / 10,000"),
            ("j k enter", "move through changes, see why"),
            ("P", "publish the draft (asks to confirm)"),
        ],
    };
    out.splice(0..0, screen_keys.iter().copied());
    out
}

/// The few keys the footer shows for a screen: (key, label).
pub fn footer(screen: Screen, detail_open: bool) -> Vec<(&'static str, &'static str)> {
    match (screen, detail_open) {
        (Screen::Approvals, false) => {
            vec![("enter", "open"), ("a", "approve"), ("d", "deny"), ("/", "filter"), ("K", "kill"), ("?", "help"), ("q", "quit")]
        }
        (Screen::Approvals, true) => {
            vec![("j/k", "scroll"), ("a", "approve"), ("d", "deny"), ("s", "simulate"), ("R", "rule"), ("esc", "back"), ("?", "help")]
        }
        (Screen::Audit, false) => {
            vec![
                ("space", "pause"),
                ("enter", "open"),
                ("/", "filter"),
                ("v", "verify"),
                ("e", "export"),
                ("K", "kill"),
                ("?", "help"),
                ("q", "quit"),
            ]
        }
        (Screen::Audit, true) => vec![("j/k", "scroll"), ("esc", "back"), ("v", "verify"), ("?", "help")],
        (Screen::Switches, _) => vec![("K", "engage"), ("l", "lift"), ("j/k", "move"), ("?", "help"), ("q", "quit")],
        (Screen::Access, _) => vec![("←/→", "section"), ("j/k", "move"), ("?", "help"), ("q", "quit")],
        (Screen::Simulate, _) => vec![("?", "help"), ("q", "quit")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebindings_may_not_collide() {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert!(build_overrides(&map(&[("approve", "A"), ("kill", "ctrl-k")])).is_ok());
        let two = build_overrides(&map(&[("approve", "z"), ("deny", "z")])).err().unwrap();
        assert!(two.contains("given to both"), "{two}");
        // `r` is `run`'s and `rotate`'s default: taking it for `approve` would shadow them.
        let shadow = build_overrides(&map(&[("approve", "r")])).err().unwrap();
        assert!(shadow.contains("already `"), "{shadow}");
        // Moving the owner away first makes it free.
        assert!(build_overrides(&map(&[("approve", "v"), ("verify", "V")])).is_ok());
    }

    #[test]
    fn keys_parse() {
        assert_eq!(parse_key("A"), Some((KeyCode::Char('A'), false)));
        assert_eq!(parse_key("ctrl-k"), Some((KeyCode::Char('k'), true)));
        assert_eq!(parse_key("f5"), Some((KeyCode::F(5), false)));
        assert_eq!(parse_key("space"), Some((KeyCode::Char(' '), false)));
        assert_eq!(parse_key("nonsense"), None);
        for (name, default, _) in REBINDABLE {
            assert!(by_name(name).is_some(), "{name}");
            assert!(parse_key(default).is_some(), "{default}");
        }
    }
}
