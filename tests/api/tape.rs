//! `demo.tape` must run as written: replay its keys against the real binary in a
//! pseudo-terminal and check every screen it says it shows (`# expect:` lines).

use std::time::Duration;

use crate::console_e2e::Console;

/// One step of the tape.
#[derive(Debug, PartialEq)]
enum Step {
    /// `Type "countersign demo …"` then `Enter`: start the binary with these arguments.
    Start(Vec<String>),
    Keys(String),
    Sleep(Duration),
    Expect(String),
}

fn parse_duration(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().unwrap_or(0))
    } else if let Some(sec) = s.strip_suffix('s') {
        Duration::from_secs_f64(sec.parse().unwrap_or(0.0))
    } else {
        Duration::from_secs_f64(s.parse().unwrap_or(0.0))
    }
}

fn parse(tape: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut started = false;
    let mut pending: Option<String> = None;
    for line in tape.lines().map(str::trim) {
        if let Some(e) = line.strip_prefix("# expect:") {
            steps.push(Step::Expect(e.trim().to_string()));
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        let key = |k: &str| Step::Keys(k.to_string());
        match cmd {
            "Type" => {
                let text = arg.trim().trim_matches('"').to_string();
                if !started && text.starts_with("countersign") {
                    pending = Some(text);
                } else {
                    steps.push(Step::Keys(text));
                }
            }
            "Enter" => match pending.take() {
                Some(cmdline) => {
                    started = true;
                    steps.push(Step::Start(cmdline.split_whitespace().skip(1).map(String::from).collect()));
                }
                None => steps.push(key("\r")),
            },
            "Escape" => steps.push(key("\x1b")),
            "Space" => steps.push(key(" ")),
            "Tab" => steps.push(key("\t")),
            "Backspace" => steps.push(key("\x7f")),
            "Up" => steps.push(key("\x1b[A")),
            "Down" => steps.push(key("\x1b[B")),
            "Right" => steps.push(key("\x1b[C")),
            "Left" => steps.push(key("\x1b[D")),
            "Sleep" => steps.push(Step::Sleep(parse_duration(arg.trim()))),
            // Recording settings: nothing to replay.
            "Output" | "Set" | "Require" | "Hide" | "Show" | "Source" | "Screenshot" => {}
            other => panic!("demo.tape uses `{other}`, which this replay does not know: teach tests/api/tape.rs"),
        }
    }
    steps
}

#[test]
fn the_tape_parses_into_keys_and_expectations() {
    let steps = parse(include_str!("../../demo.tape"));
    assert!(matches!(steps.first(), Some(Step::Start(args)) if args.first().map(String::as_str) == Some("demo")));
    assert!(steps.iter().filter(|s| matches!(s, Step::Expect(_))).count() >= 10);
}

#[test]
fn the_demo_tape_runs_as_written() {
    let steps = parse(include_str!("../../demo.tape"));
    let mut console: Option<Console> = None;
    let data = tempfile::tempdir().unwrap();
    for step in steps {
        match step {
            Step::Start(mut args) => {
                // The tape's size (1280×760 at 14 px) is about 120×36.
                args.extend(["--data-dir".to_string(), data.path().display().to_string()]);
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                console = Some(Console::start("http://127.0.0.1:1", 36, 120, &refs));
            }
            Step::Keys(k) => {
                console.as_mut().expect("the tape types before starting the demo").send(&k);
                if k == "\x1b" {
                    // A lone ESC followed at once by a key reads as Alt+key; VHS types
                    // with a delay between keys, and so must the replay.
                    std::thread::sleep(Duration::from_millis(80));
                }
            }
            // The tape sleeps for the viewer; the replay waits for what it expects instead,
            // and only pauses briefly so keys arrive in order as a person would type them.
            Step::Sleep(d) => std::thread::sleep(d.min(Duration::from_millis(150))),
            Step::Expect(text) => console.as_ref().expect("started").wait_for(&text, 20),
        }
    }
    let c = console.expect("the tape starts the demo");
    assert!(c.quit_after_q(), "`q` at the end of the tape quits the demo cleanly");
}
