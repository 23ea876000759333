//! What names may look like: tools, roles, workspaces, tokens. One rule each, so the
//! API, the store and the console agree.

/// Tool names are dotted lower-case words: `email.send`, `payments.charge`,
/// `crm.contacts.read`. Words are `[a-z0-9_-]`, start with a letter, 1..=64 bytes in all.
/// The refusal of a string that is not a tool name ([`valid_tool_name`]), showing it.
pub fn check_tool_name(name: &str) -> Result<(), crate::error::Error> {
    if valid_tool_name(name) {
        return Ok(());
    }
    let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    Err(crate::error::Error::unprocessable(
        "invalid_tool_name",
        format!(
            "`{shown}` is not a tool name: tool names are dotted lower-case words such as `email.send` (a-z, 0-9, `_`, `-`; at most 64 bytes)"
        ),
    ))
}

pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('.').all(|word| {
            let mut chars = word.chars();
            matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        })
}

/// Custom role names are lower-case slugs, 2..=40 bytes, and never a built-in's name.
pub fn valid_role_name(name: &str) -> bool {
    (2..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_'))
}

/// Display names (workspaces, tokens, members): 1..=100 characters, not blank, as free
/// text on one line. They are shown in terminals, so control characters could repaint a
/// screen and bidirectional ones reorder it.
pub fn valid_display_name(name: &str) -> bool {
    !name.trim().is_empty() && valid_free_text(name, 100, false)
}

/// A deliberately plain e-mail check: one `@`, something either side, a dot in the
/// domain, no spaces or control characters, at most 254 bytes. Delivery proves the rest.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Normalises an e-mail for lookup: addresses are matched case-insensitively.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Unicode's bidirectional controls (embeddings, overrides, isolates, marks): in text an
/// approver reads, they can show it in another order than it was sent (`U+202E` turns
/// "txt.exe" into "exe.txt" on screen), so text that people judge refuses them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Free text that people read (reasons, resources): at most `max` characters; no control
/// characters, but line breaks and tabs where `multiline`; no bidirectional controls.
pub fn valid_free_text(s: &str, max: usize, multiline: bool) -> bool {
    s.chars().count() <= max && !s.chars().any(|c| (c.is_control() && !(multiline && (c == '\n' || c == '\t'))) || is_bidi_control(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names() {
        for ok in ["email.send", "payments.charge", "crm.read", "a", "x1.y_2.z-3"] {
            assert!(valid_tool_name(ok), "{ok}");
        }
        for bad in ["", "Email.send", "email..send", ".email", "email.", "1email", "email send", &"a".repeat(65)] {
            assert!(!valid_tool_name(bad), "{bad}");
        }
    }

    #[test]
    fn emails_and_names() {
        assert!(valid_email("ada@example.com"));
        assert!(!valid_email("ada@example"));
        assert!(!valid_email("ada example.com"));
        assert!(!valid_email("@example.com"));
        assert!(valid_display_name("On-call responder"));
        assert!(!valid_display_name("   "));
        assert!(!valid_display_name("bad\u{1b}[2J"));
        assert!(valid_role_name("approver"));
        assert!(!valid_role_name("Approver"));
    }
}
