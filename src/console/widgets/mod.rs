//! Pieces drawn on more than one screen.

pub mod diff;
pub mod fields;

use chrono::{DateTime, Utc};

/// "12:34" (or "1h02m") until `t`, or "expired".
pub fn countdown(now: DateTime<Utc>, t: &str) -> (String, i64) {
    let Some(t) = crate::clock::parse_ts(t) else { return ("?".into(), 0) };
    let secs = (t - now).num_seconds();
    if secs <= 0 {
        return ("expired".into(), secs);
    }
    let text =
        if secs >= 3600 { format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60) } else { format!("{:02}:{:02}", secs / 60, secs % 60) };
    (text, secs)
}

/// "3m ago", "2h ago", for timestamps.
pub fn ago(now: DateTime<Utc>, t: &str) -> String {
    let Some(t) = crate::clock::parse_ts(t) else { return String::new() };
    let secs = (now - t).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// The first `n` characters of `s`, with `…` when cut.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` in lines of at most `width` characters, broken between words where it can be (a
/// word longer than a line is cut), at most `max` lines: the last one ends in `…` if
/// anything was left over.
pub fn wrap(s: &str, width: usize, max: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let room = if used == 0 { width } else { width.saturating_sub(used + 1) };
            if word.len() <= room {
                if used > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used == 0 {
                // Longer than a whole line: cut it.
                line.extend(word.drain(..width));
            }
            lines.push(std::mem::take(&mut line));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    if lines.len() > max.max(1) {
        lines.truncate(max.max(1));
        let last = lines.last_mut().expect("at least one line");
        if last.chars().count() + 2 <= width {
            last.push_str(" …");
        } else {
            last.pop();
            last.push('…');
        }
    }
    lines
}

/// Removes control characters, which could repaint the terminal: a line break shows as
/// `↵`, anything else as `␣`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\n' {
                '↵'
            } else if c.is_control() {
                '␣'
            } else {
                c
            }
        })
        .collect()
}
