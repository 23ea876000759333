//! CSV for people: RFC 4180 quoting, and no cell a spreadsheet would run as a formula.

/// Characters that make a spreadsheet treat a cell as a formula (OWASP's list).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One cell: neutralised (a leading `'` before a formula character) and quoted when it
/// holds a comma, quote or line break, with quotes doubled.
pub fn cell(value: &str) -> String {
    let neutral = if value.starts_with(FORMULA_STARTS) { format!("'{value}") } else { value.to_string() };
    if neutral.contains([',', '"', '\n', '\r']) { format!("\"{}\"", neutral.replace('"', "\"\"")) } else { neutral }
}

/// One record, CRLF-terminated as RFC 4180 says.
pub fn row<S: AsRef<str>>(cells: &[S]) -> String {
    let mut out = cells.iter().map(|c| cell(c.as_ref())).collect::<Vec<_>>().join(",");
    out.push_str("\r\n");
    out
}

/// The audit event columns, in export order.
pub const AUDIT_HEADER: [&str; 14] = [
    "seq",
    "id",
    "ts",
    "workspace_id",
    "event_type",
    "actor_kind",
    "actor_id",
    "via",
    "resource",
    "payload_sha256",
    "outcome",
    "data",
    "prev_hash",
    "hash",
];

/// One audit event as a CSV record.
pub fn audit_row(e: &crate::audit::AuditEvent) -> String {
    row(&[
        e.seq.to_string(),
        e.id.clone(),
        e.ts.clone(),
        e.workspace_id.clone(),
        e.event_type.clone(),
        e.actor.kind.as_str().to_string(),
        e.actor.id.clone(),
        e.via.as_str().to_string(),
        e.resource.clone().unwrap_or_default(),
        e.payload_sha256.clone().unwrap_or_default(),
        e.outcome.clone(),
        e.data.to_string(),
        e.prev_hash.clone(),
        e.hash.clone(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_rfc_4180() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(row(&["a", "b,c"]), "a,\"b,c\"\r\n");
    }

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(cell("=HYPERLINK(\"http://evil\")"), "\"'=HYPERLINK(\"\"http://evil\"\")\"");
        assert_eq!(cell("+1+1"), "'+1+1");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("a=b"), "a=b");
    }
}
