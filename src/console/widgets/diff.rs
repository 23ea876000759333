//! The diff an approver reads: `current` → proposed, line by line with the changed words
//! emphasised, and `+`/`-` marks so it reads without colour.

use ratatui::text::{Line, Span};
use similar::{ChangeTag, TextDiff};

use crate::console::theme::Theme;

/// Pretty JSON with sorted keys (serde_json's map is ordered), the form both sides of a
/// diff and the payload view use.
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The diff of two texts as styled lines `width` columns wide, each starting with `+ `,
/// `- ` or `  `. A line too long for the width goes on under the same mark, indented past
/// the line's own indentation, so every row of a long value still says which side it is.
pub fn lines(old: &str, new: &str, theme: &Theme, width: usize) -> Vec<Line<'static>> {
    let diff = TextDiff::from_lines(old, new);
    let mut out = Vec::new();
    for op in diff.ops() {
        for change in diff.iter_inline_changes(op) {
            let (mark, line_style, word_style) = match change.tag() {
                ChangeTag::Delete => ("- ", theme.diff_del, theme.diff_del_word),
                ChangeTag::Insert => ("+ ", theme.diff_add, theme.diff_add_word),
                ChangeTag::Equal => ("  ", theme.muted, theme.muted),
            };
            let mut spans = vec![Span::styled(mark, line_style)];
            let mut indent = None;
            for (emphasised, value) in change.iter_strings_lossy() {
                let text = super::printable(value.trim_end_matches('\n'));
                indent.get_or_insert_with(|| text.chars().take_while(|c| *c == ' ').count());
                spans.push(Span::styled(text, if emphasised { word_style } else { line_style }));
            }
            let under = vec![Span::styled(mark, line_style), Span::raw(" ".repeat(indent.unwrap_or(0) + 2))];
            out.extend(super::wrap_spans(spans, width, under));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::text;
    use super::*;

    #[test]
    fn changed_lines_carry_marks_that_read_without_colour() {
        let t = Theme::monochrome();
        let old = pretty(&serde_json::json!({"status": "open", "title": "Launch"}));
        let new = pretty(&serde_json::json!({"status": "done", "title": "Launch"}));
        let got = text(&lines(&old, &new, &t, 80));
        assert!(got.contains(&"-   \"status\": \"open\",".to_string()), "{got:?}");
        assert!(got.contains(&"+   \"status\": \"done\",".to_string()), "{got:?}");
        assert!(got.contains(&"    \"title\": \"Launch\"".to_string()), "{got:?}");
    }

    #[test]
    fn a_wrapped_line_keeps_its_mark() {
        let t = Theme::monochrome();
        let new = pretty(&serde_json::json!({"body": "Hello, please find attached the invoice for November"}));
        let got = text(&lines("", &new, &t, 30));
        assert_eq!(got, ["+ {", "+   \"body\": \"Hello, please ", "+     find attached the ", "+     invoice for November\"", "+ }"]);
    }
}
