//! Pieces drawn on more than one screen.

pub mod diff;
pub mod fields;

use chrono::{DateTime, Utc};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Draws a table with the row at `selected` (an index into its rows) in the selection
/// style laid over the colours of its cells, not under them: a red or green word on the
/// selection's background is hard to read in 16 colours, so the row under the cursor takes
/// the selection's colours whole. Colour is never the only sign (states are also words).
/// Should the cursor's row lie below the area, the table scrolls to show it.
pub fn selectable_table(
    f: &mut ratatui::Frame,
    table: ratatui::widgets::Table<'_>,
    area: ratatui::layout::Rect,
    selected: Option<usize>,
    selection: Style,
) {
    let mut state = ratatui::widgets::TableState::default().with_selected(selected);
    f.render_stateful_widget(table.row_highlight_style(selection), area, &mut state);
}

/// How many terminal columns `s` takes: a CJK character or most emoji take two, a
/// combining mark none. Every measure of text on screen goes through this (or
/// [`char_cols`]), never a count of characters, or wide text overruns its column.
pub fn cols(s: &str) -> usize {
    s.width()
}

/// How many columns one character takes (control characters, which [`printable`] removes
/// before drawing, none).
pub fn char_cols(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// `s` in `n` columns with `…` in the middle when cut: for names, such as tools', that
/// differ at their ends (`….quarter-end`, `….close-books`) as often as at their starts.
pub fn clip_middle(s: &str, n: usize) -> String {
    if cols(s) <= n {
        return s.to_string();
    }
    let room = n.saturating_sub(1);
    let (head, _) = split_cols(s, room.div_ceil(2), false);
    let tail_room = room - cols(&head);
    // The end, read backwards: the last characters that fit in what is left.
    let mut tail: Vec<char> = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        if used + char_cols(c) > tail_room {
            break;
        }
        used += char_cols(c);
        tail.push(c);
    }
    format!("{head}…{}", tail.into_iter().rev().collect::<String>())
}

/// `s` followed by spaces to fill `n` columns (as it is if it is wider).
pub fn pad(s: &str, n: usize) -> String {
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', n.saturating_sub(cols(s))));
    out
}

/// The longest start of `s` that fits in `n` columns, and the rest. At least one
/// character goes first when `at_least_one`, so a character wider than the room (a CJK
/// character in a one-column gap) still moves on.
fn split_cols(s: &str, n: usize, at_least_one: bool) -> (String, String) {
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let w = char_cols(c);
        if used + w > n && !(at_least_one && i == 0) {
            break;
        }
        used += w;
        end = i + c.len_utf8();
    }
    (s[..end].to_string(), s[end..].to_string())
}

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

/// How wide each of a table's columns will be, laid out as ratatui's `Table` lays them
/// out (one column of spacing between them), so a cell can be clipped with `…` to the
/// width it gets rather than cut silently at its edge.
pub fn column_widths(width: u16, constraints: &[ratatui::layout::Constraint]) -> Vec<usize> {
    let area = ratatui::layout::Rect::new(0, 0, width, 1);
    ratatui::layout::Layout::horizontal(constraints.to_vec()).spacing(1).split(area).iter().map(|r| r.width as usize).collect()
}

/// The start of `s` that fits in `n` columns, with `…` when cut.
pub fn clip(s: &str, n: usize) -> String {
    if cols(s) <= n {
        return s.to_string();
    }
    let (mut out, _) = split_cols(s, n.saturating_sub(1), false);
    out.push('…');
    out
}

/// `s` in lines of at most `width` columns, broken between words where it can be (a
/// word longer than a line is cut), at most `max` lines: the last one ends in `…` if
/// anything was left over.
pub fn wrap(s: &str, width: usize, max: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = wrap_rooms(s, width, width);
    if lines.len() > max.max(1) {
        lines.truncate(max.max(1));
        let last = lines.last_mut().expect("at least one line");
        if cols(last) + 2 <= width {
            last.push_str(" …");
        } else {
            let (kept, _) = split_cols(last, width.saturating_sub(1), false);
            *last = kept + "…";
        }
    }
    lines
}

/// `s` broken between words into a first line of at most `first` columns and further
/// lines of at most `rest` (a word longer than a line is cut).
fn wrap_rooms(s: &str, first: usize, rest: usize) -> Vec<String> {
    let (first, rest) = (first.max(1), rest.max(1));
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let mut word = word.to_string();
        loop {
            let width = if lines.is_empty() { first } else { rest };
            let used = cols(&line);
            let room = if used == 0 { width } else { width.saturating_sub(used + 1) };
            if cols(&word) <= room {
                if used > 0 {
                    line.push(' ');
                }
                line.push_str(&word);
                break;
            }
            if used == 0 {
                // Longer than a whole line: cut it.
                let (head, tail) = split_cols(&word, width, true);
                line = head;
                word = tail;
                if word.is_empty() {
                    break;
                }
            }
            lines.push(std::mem::take(&mut line));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `lead` and then `text` wrapped into the columns to its right, each further line
/// starting under the text rather than at column 0, so a column of labels (trace stages,
/// field names) stays readable however long the values are. Where that would leave the
/// text fewer than 16 columns, it flows on after the lead instead, its further lines
/// indented by two.
pub fn hanging(lead: Vec<Span<'static>>, text: &str, style: Style, width: usize) -> Vec<Line<'static>> {
    let lead_width: usize = lead.iter().map(Span::width).sum();
    let indent = if width >= lead_width + 16 { lead_width } else { 2 };
    flow(lead, text, style, width, indent)
}

/// `lead`, then `text` on the same line and the lines after it, each of those starting
/// `indent` columns in.
pub fn flow(lead: Vec<Span<'static>>, text: &str, style: Style, width: usize, indent: usize) -> Vec<Line<'static>> {
    let lead_width: usize = lead.iter().map(Span::width).sum();
    if text.trim().is_empty() {
        return vec![Line::from(lead)];
    }
    let indent = indent.min(width.saturating_sub(8));
    let (beside, rest) = (width.saturating_sub(lead_width), width.saturating_sub(indent));
    // Not even one word (or 8 columns of one) fits beside the lead: it starts on the next line.
    let starts_beside = beside >= text.split_whitespace().next().map_or(0, |w| cols(w).min(8));
    let mut parts = wrap_rooms(text, if starts_beside { beside } else { rest }, rest).into_iter();
    let mut first = lead;
    if starts_beside && let Some(p) = parts.next() {
        first.push(Span::styled(p, style));
    }
    let mut out = vec![Line::from(first)];
    out.extend(parts.map(|p| Line::from(vec![Span::raw(" ".repeat(indent)), Span::styled(p, style)])));
    out
}

/// A line of styled spans in lines at most `width` columns wide (0: as it is), broken
/// after a space where it can be and inside a word where it must, each further line
/// starting with `under`. Styles carry over the breaks.
pub fn wrap_spans(spans: Vec<Span<'static>>, width: usize, under: Vec<Span<'static>>) -> Vec<Line<'static>> {
    let total: usize = spans.iter().map(Span::width).sum();
    let under_width: usize = under.iter().map(Span::width).sum();
    if width == 0 || total <= width || width <= under_width + 8 {
        return vec![Line::from(spans)];
    }
    // Pieces: runs of characters ending in a space (or the span's end), with their style.
    let mut pieces: Vec<(String, Style)> = Vec::new();
    for s in &spans {
        let mut piece = String::new();
        for c in s.content.chars() {
            piece.push(c);
            if c == ' ' {
                pieces.push((std::mem::take(&mut piece), s.style));
            }
        }
        if !piece.is_empty() {
            pieces.push((piece, s.style));
        }
    }
    let mut out = Vec::new();
    let mut line: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for (mut text, style) in pieces {
        loop {
            let n = cols(&text);
            if used + n <= width {
                used += n;
                line.push(Span::styled(text, style));
                break;
            }
            let fresh = used == 0 || (out.is_empty() && line.is_empty()) || used == under_width;
            if !fresh && n <= width - under_width {
                // The piece fits on a line of its own: break before it.
                out.push(Line::from(std::mem::take(&mut line)));
                line = under.clone();
                used = under_width;
                continue;
            }
            // Longer than a line: cut it where this line ends.
            let (cut, rest) = split_cols(&text, width - used, used == under_width);
            text = rest;
            if !cut.is_empty() {
                line.push(Span::styled(cut, style));
            }
            out.push(Line::from(std::mem::take(&mut line)));
            line = under.clone();
            used = under_width;
            if text.is_empty() {
                break;
            }
        }
    }
    if used > under_width || out.is_empty() {
        out.push(Line::from(line));
    }
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
    let stage_w = rows.iter().map(|r| cols(&r.stage)).max().unwrap_or(0) + 1;
    let verdict_w = rows.iter().filter(|r| !r.detail.is_empty()).map(|r| cols(&r.verdict)).max().unwrap_or(0) + 1;
    let pad = " ".repeat(indent);
    // A table while the details keep a readable column; narrower, each stage flows on one
    // line and its detail's further lines are indented under the stage's name.
    let table = width >= indent + stage_w + verdict_w + 30;
    rows.iter()
        .flat_map(|r| {
            if table {
                let lead = vec![
                    Span::styled(format!("{pad}{}", self::pad(&r.stage, stage_w)), r.stage_style),
                    Span::styled(self::pad(&r.verdict, verdict_w), r.verdict_style),
                ];
                hanging(lead, &printable(&r.detail), r.detail_style, width)
            } else {
                let lead = vec![
                    Span::styled(format!("{pad}{}: ", r.stage), r.stage_style),
                    Span::styled(format!("{} ", r.verdict), r.verdict_style),
                ];
                let detail = if r.detail.is_empty() { String::new() } else { format!("— {}", printable(&r.detail)) };
                flow(lead, &detail, r.detail_style, width, indent + 2)
            }
        })
        .collect()
}

/// Removes control characters, which could repaint the terminal, and bidirectional
/// controls, which could reorder what is shown: a line break shows as `↵`, anything else
/// as `␣`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\n' {
                '↵'
            } else if c.is_control() || crate::names::is_bidi_control(c) {
                // Bidirectional controls too: they would show the approver the text in
                // another order than it was sent.
                '␣'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Each line's text, styles dropped (for the widgets' own tests, `diff`'s too).
    pub(in crate::console::widgets) fn text(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect()).collect()
    }

    #[test]
    fn what_could_repaint_or_reorder_the_screen_is_shown_as_a_mark() {
        assert_eq!(printable("a\u{1b}[2Jb\nc\u{202E}d\u{2066}e"), "a␣[2Jb↵c␣d␣e");
    }

    #[test]
    fn wide_characters_are_measured_in_columns() {
        // Two columns each: ten of them fill a line of twenty.
        let cjk = "請求書の送付先を変更する必要があります";
        assert_eq!(cols(cjk), 38);
        assert_eq!(clip(cjk, 9), "請求書の…");
        assert_eq!(clip_middle("billing.reconcile-ledger-entries-for-quarter-end", 20), "billing.re…arter-end");
        assert_eq!(clip_middle("short.name", 20), "short.name");
        assert_eq!(pad("日本", 6), "日本  ");
        let lines = wrap(&format!("件名 {cjk}"), 12, 10);
        assert!(lines.iter().all(|l| cols(l) <= 12), "{lines:?}");
        assert_eq!(lines.concat().replace(' ', ""), format!("件名{cjk}"));
        // A gap of one column cannot take a wide character: it moves to the next line whole.
        let spans = wrap_spans(vec![Span::raw("+ abcdefghi"), Span::raw("日本語日本語日本語")], 12, vec![Span::raw("  ")]);
        assert_eq!(text(&spans), ["+ abcdefghi", "  日本語日本", "  語日本語"]);
        let lines = hanging(vec![Span::raw("subject   ")], "東京都千代田区丸の内一丁目", Style::default(), 30);
        assert_eq!(text(&lines), ["subject   東京都千代田区丸の内", "          一丁目"]);
    }

    #[test]
    fn wrapped_text_hangs_under_its_column() {
        let lines = hanging(vec![Span::raw("stage  ")], "one two three four five six", Style::default(), 23);
        assert_eq!(text(&lines), ["stage  one two three", "       four five six"]);
    }

    #[test]
    fn too_narrow_to_hang_flows_on_indented_by_two() {
        let lines = hanging(vec![Span::raw("label here ")], "one two three four", Style::default(), 20);
        assert_eq!(text(&lines), ["label here one two", "  three four"]);
    }

    #[test]
    fn a_narrow_trace_flows_instead_of_a_table() {
        let row = TraceRow {
            stage: "scope".into(),
            verdict: "pass".into(),
            detail: "`milestones.update` is within the caller's tools".into(),
            stage_style: Style::default(),
            verdict_style: Style::default(),
            detail_style: Style::default(),
        };
        assert_eq!(text(&trace(&[row], 2, 40)), ["  scope: pass — `milestones.update` is", "    within the caller's tools"]);
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
