//! Pieces drawn on more than one screen.

pub mod diff;
pub mod fields;

use chrono::{DateTime, Utc};
use ratatui::style::Style;
use ratatui::text::{Line, Span};

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

/// `lead` and then `text` wrapped into the columns to its right, each further line
/// starting under the text rather than at column 0, so a column of labels (trace stages,
/// field names) stays readable however long the values are. Where the lead leaves fewer
/// than 16 columns the text goes on the lines below it, indented by two.
pub fn hanging(lead: Vec<Span<'static>>, text: &str, style: Style, width: usize) -> Vec<Line<'static>> {
    const MIN_ROOM: usize = 16;
    let lead_width: usize = lead.iter().map(Span::width).sum();
    if text.trim().is_empty() {
        return vec![Line::from(lead)];
    }
    let (indent, room, beside) =
        if width >= lead_width + MIN_ROOM { (lead_width, width - lead_width, true) } else { (2, width.saturating_sub(2).max(1), false) };
    let mut parts = wrap(text, room, usize::MAX).into_iter();
    let mut first = lead;
    let mut out = Vec::new();
    if beside && let Some(p) = parts.next() {
        first.push(Span::styled(p, style));
    }
    out.push(Line::from(first));
    out.extend(parts.map(|p| Line::from(vec![Span::raw(" ".repeat(indent)), Span::styled(p, style)])));
    out
}

/// One stage of a decision's trace, with how each of its parts is drawn.
pub struct TraceRow {
    pub stage: String,
    pub verdict: String,
    pub detail: String,
    pub stage_style: Style,
    pub verdict_style: Style,
    pub detail_style: Style,
}

/// A trace as a table: stage, verdict, then the detail wrapped in its own column. The
/// columns are as wide as this trace needs, not the widest any trace could need, so a
/// narrow pane keeps room for the details; a verdict with no detail beside it (the
/// outcome's) may run past its column.
pub fn trace(rows: &[TraceRow], indent: usize, width: usize) -> Vec<Line<'static>> {
    let stage_w = rows.iter().map(|r| r.stage.chars().count()).max().unwrap_or(0) + 1;
    let verdict_w = rows.iter().filter(|r| !r.detail.is_empty()).map(|r| r.verdict.chars().count()).max().unwrap_or(0) + 1;
    let pad = " ".repeat(indent);
    rows.iter()
        .flat_map(|r| {
            let lead = vec![
                Span::styled(format!("{pad}{:<stage_w$}", r.stage), r.stage_style),
                Span::styled(format!("{:<verdict_w$}", r.verdict), r.verdict_style),
            ];
            hanging(lead, &printable(&r.detail), r.detail_style, width)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect()).collect()
    }

    #[test]
    fn wrapped_text_hangs_under_its_column() {
        let lines = hanging(vec![Span::raw("stage  ")], "one two three four five six", Style::default(), 23);
        assert_eq!(text(&lines), ["stage  one two three", "       four five six"]);
    }

    #[test]
    fn too_narrow_to_hang_goes_below_the_lead() {
        let lines = hanging(vec![Span::raw("a long label here ")], "one two", Style::default(), 20);
        assert_eq!(text(&lines), ["a long label here ", "  one two"]);
    }

    #[test]
    fn trace_columns_fit_this_trace() {
        let row = |stage: &str, verdict: &str, detail: &str| TraceRow {
            stage: stage.into(),
            verdict: verdict.into(),
            detail: detail.into(),
            stage_style: Style::default(),
            verdict_style: Style::default(),
            detail_style: Style::default(),
        };
        let rows = [row("scope", "pass", "within the caller's tools"), row("outcome", "pending_approval (1)", "")];
        // The outcome's long verdict has no detail beside it, so it does not widen the column.
        assert_eq!(text(&trace(&rows, 2, 80)), ["  scope   pass within the caller's tools", "  outcome pending_approval (1)"]);
    }
}
