//! Canonical JSON (RFC 8785, "JCS") and the SHA-256 that pins a payload.
//!
//! This is the one place that decides what a payload's hash is. Approvals are pinned
//! to it, the audit chain is built from it, and `countersign hash` prints it, so all
//! three must agree byte for byte; they do because they all call [`canonicalize`].
//!
//! JSON text from outside passes [`check_json_text`] first. JCS represents every number
//! as an IEEE-754 double, so a few inputs cannot survive canonicalisation unchanged; we
//! refuse them rather than hash something other than what was sent:
//! - numbers beyond the range of a double (`1e400`), and non-zero numbers so small they
//!   would become `0` (`1e-400`);
//! - whole numbers whose canonical form is a different number (`9007199254740993`, or
//!   `9007199254740993.0`, would become `9007199254740992`): an account number must not
//!   change under the hash.
//!
//! - a name given twice in one object (`{"to": "a", "to": "b"}`): RFC 8785 takes I-JSON,
//!   which allows each name once; a parser keeps one of the two, and which one is not
//!   something a signature should depend on.
//!
//! Decimal fractions are rounded to the nearest double, as every JSON consumer does
//! (`333333333.33333329` is `333333333.3333333`; RFC 8785's own example).

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How deeply arrays and objects may nest in any JSON we accept. Deep enough for any
/// real payload, shallow enough that no document can exhaust a stack.
pub const MAX_DEPTH: usize = 64;

/// Why a JSON text or value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("JSON nests deeper than {max} levels at line {line}, column {column}")]
    TooDeep { max: usize, line: usize, column: usize },
    #[error("the number {literal} at line {line}, column {column} {problem}")]
    Number { literal: String, line: usize, column: usize, problem: String },
    #[error("the name {name} appears twice in one object (line {line}, column {column}); RFC 8785 allows each name once")]
    DuplicateName { name: String, line: usize, column: usize },
}

impl JsonError {
    /// The 1-based line and column of the problem.
    pub fn position(&self) -> (usize, usize) {
        match self {
            JsonError::Syntax { line, column, .. }
            | JsonError::TooDeep { line, column, .. }
            | JsonError::Number { line, column, .. }
            | JsonError::DuplicateName { line, column, .. } => (*line, *column),
        }
    }

    pub(crate) fn from_serde(e: &serde_json::Error) -> Self {
        let message = e.to_string();
        // serde_json appends " at line L column C"; we report the position separately.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        if message.contains("recursion limit") {
            return JsonError::TooDeep { max: MAX_DEPTH, line: e.line(), column: e.column() };
        }
        JsonError::Syntax { line: e.line(), column: e.column(), message }
    }
}

/// Parses JSON text into a value, refusing what JCS would change (see the module
/// comment) and anything nested deeper than [`MAX_DEPTH`].
pub fn parse(text: &[u8]) -> Result<Value, JsonError> {
    match serde_json::from_slice::<Value>(text) {
        Ok(value) => {
            check_json_text(text)?;
            Ok(value)
        }
        // serde refuses `1e400` itself, as "number out of range"; our scan says more.
        Err(e) => Err(check_broken_json_text(text).unwrap_or_else(|| JsonError::from_serde(&e))),
    }
}

/// Checks syntactically valid JSON text for what serde cannot see once it has parsed:
/// nesting depth, the exact digits of every number, and names given twice in an object.
pub fn check_json_text(text: &[u8]) -> Result<(), JsonError> {
    // One entry per open array or object; for an object, whether a name comes next and
    // the names seen so far (as written; compared unescaped when either has an escape).
    let mut open: Vec<Option<Names<'_>>> = Vec::new();
    let mut line = 1usize;
    let mut line_start = 0usize;
    let mut i = 0usize;
    while i < text.len() {
        let b = text[i];
        match b {
            b'"' => {
                // Skip the string, honouring escapes; strings hold no numbers.
                let start = i;
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Some(names)) = open.last_mut()
                    && std::mem::take(&mut names.name_next)
                    && !names.insert(&text[start..=i.min(text.len() - 1)])
                {
                    let name = String::from_utf8_lossy(&text[start..=i.min(text.len() - 1)]).chars().take(80).collect();
                    return Err(JsonError::DuplicateName { name, line, column: start - line_start + 1 });
                }
            }
            b'[' | b'{' => {
                open.push((b == b'{').then(Names::default));
                if open.len() > MAX_DEPTH {
                    return Err(JsonError::TooDeep { max: MAX_DEPTH, line, column: i - line_start + 1 });
                }
            }
            b']' | b'}' => {
                open.pop();
            }
            b',' => {
                if let Some(Some(names)) = open.last_mut() {
                    names.name_next = true;
                }
            }
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < text.len() && matches!(text[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                // Valid UTF-8 is guaranteed by the parse that came first; number bytes are ASCII.
                let literal = std::str::from_utf8(&text[start..=i]).unwrap_or_default();
                if let Err(problem) = check_number(literal) {
                    return Err(JsonError::Number { literal: literal.to_string(), line, column: start - line_start + 1, problem });
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// What [`check_json_text`] can say of text serde could not parse: a number or the depth
/// (serde's own words for those are vaguer), never a repeated name — in broken text that
/// would be a guess, and the syntax error is the news.
pub fn check_broken_json_text(text: &[u8]) -> Option<JsonError> {
    check_json_text(text).err().filter(|e| !matches!(e, JsonError::DuplicateName { .. }))
}

/// The names of one open object, while [`check_json_text`] scans it.
struct Names<'a> {
    name_next: bool,
    /// Each name as written, quotes included.
    seen: Vec<&'a [u8]>,
    /// The same, unescaped, once the object is large or a name has an escape.
    unescaped: Option<std::collections::HashSet<String>>,
}

impl Default for Names<'_> {
    fn default() -> Self {
        Names { name_next: true, seen: Vec::new(), unescaped: None }
    }
}

impl<'a> Names<'a> {
    /// Adds a name (a JSON string literal, quotes included); `false` if already there.
    fn insert(&mut self, literal: &'a [u8]) -> bool {
        // Small objects with plain names, the usual case: compare the bytes.
        if self.unescaped.is_none() && self.seen.len() < 16 && !literal.contains(&b'\\') {
            if self.seen.contains(&literal) {
                return false;
            }
            self.seen.push(literal);
            return true;
        }
        let unescape = |l: &[u8]| serde_json::from_slice::<String>(l).unwrap_or_else(|_| String::from_utf8_lossy(l).into_owned());
        let set = self.unescaped.get_or_insert_with(|| self.seen.iter().map(|n| unescape(n)).collect());
        set.insert(unescape(literal))
    }
}

/// Checks one number literal; `Err` says what JCS would do to it.
fn check_number(literal: &str) -> Result<(), String> {
    let plain_integer = !literal.contains(['.', 'e', 'E']);
    let digits = literal.trim_start_matches('-');
    // Fast path: integers of up to 15 digits are always exact doubles.
    if plain_integer && digits.len() <= 15 {
        return Ok(());
    }
    let Ok(value) = literal.parse::<f64>() else {
        return Err("is not a number".to_string());
    };
    if !value.is_finite() {
        return Err("is beyond the range of an IEEE-754 double, which RFC 8785 requires".to_string());
    }
    let written = normalize_decimal(literal);
    if value == 0.0 {
        return if written.digits.is_empty() { Ok(()) } else { Err("is too small for an IEEE-754 double: it would become 0".to_string()) };
    }
    // A whole number however it is spelt (`9007199254740993.0`, `9007199254740993e0`):
    // an identifier is no less an identifier for a decimal point.
    if written.exponent >= 0 {
        let canonical = format_number(value);
        if normalize_decimal(&canonical) != written {
            return Err(format!(
                "cannot be represented exactly as an IEEE-754 double: RFC 8785 would change it to {canonical}; send it as a string"
            ));
        }
    }
    Ok(())
}

/// A decimal number as sign, significant digits and a power of ten, so that two
/// spellings of one value (`1.50`, `15e-1`) compare equal.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

fn normalize_decimal(s: &str) -> Decimal {
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i64>().unwrap_or(i64::MAX / 2)),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = format!("{int}{frac}").trim_start_matches('0').to_string();
    let mut exponent = exp.saturating_sub(frac.len() as i64);
    while digits.ends_with('0') {
        digits.pop();
        exponent = exponent.saturating_add(1);
    }
    if digits.is_empty() {
        return Decimal { negative: false, digits, exponent: 0 };
    }
    Decimal { negative, digits, exponent }
}

/// Formats a finite double the way RFC 8785 (and ECMAScript) does.
pub fn format_number(value: f64) -> String {
    ryu_js::Buffer::new().format_finite(value).to_string()
}

/// The RFC 8785 canonical form of any serialisable value built by our own code.
/// Refuses NaN and infinities (which JSON cannot carry).
pub fn canonicalize<T: Serialize>(value: &T) -> Result<String, JsonError> {
    serde_json_canonicalizer::to_string(value).map_err(|e| JsonError::Number {
        literal: String::new(),
        line: 0,
        column: 0,
        problem: format!("cannot be canonicalised: {e}"),
    })
}

/// The canonical form of a JSON value, refusing integers a double cannot hold exactly
/// (a value built in code gets the same protection as JSON text from outside).
pub fn canonicalize_value(value: &Value) -> Result<String, JsonError> {
    check_value_numbers(value)?;
    let mut out = String::with_capacity(256);
    write_value(value, &mut out);
    Ok(out)
}

/// Writes a value's RFC 8785 form, without the allocation-heavy general path: this is on
/// every decision's hot path (the payload, and every audit event). Numbers must already
/// be checked ([`check_json_text`] or [`canonicalize_value`]). The property test below
/// holds it to the general canonicaliser byte for byte.
pub fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            // serde_json's map iterates in UTF-8 byte order, which is UTF-16 code-unit
            // order unless a key holds a character at or above U+E000; only then sort.
            let needs_sort = map.keys().any(|k| k.chars().any(|c| c as u32 >= 0xE000));
            if needs_sort {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                write_entries(entries.into_iter(), out);
            } else {
                write_entries(map.iter(), out);
            }
            out.push('}');
        }
    }
}

fn write_entries<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>, out: &mut String) {
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(k, out);
        out.push(':');
        write_value(v, out);
    }
}

fn write_number(n: &serde_json::Number, out: &mut String) {
    use std::fmt::Write as _;
    const SAFE: u64 = 1 << 53;
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) if i.unsigned_abs() <= SAFE => {
            let _ = write!(out, "{i}");
        }
        (_, Some(u)) if u <= SAFE => {
            let _ = write!(out, "{u}");
        }
        _ => out.push_str(&format_number(n.as_f64().unwrap_or(0.0))),
    }
}

/// A JSON string as RFC 8785 (and ECMAScript) writes it: quote and backslash escaped,
/// the control characters as short escapes (`\n`, `\t`…) or `\u00xx`, the rest as is.
pub fn write_str(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn check_value_numbers(value: &Value) -> Result<(), JsonError> {
    match value {
        Value::Number(n) => {
            let literal = n.to_string();
            check_number(&literal).map_err(|problem| JsonError::Number { literal, line: 0, column: 0, problem })
        }
        Value::Array(items) => items.iter().try_for_each(check_value_numbers),
        Value::Object(map) => map.values().try_for_each(check_value_numbers),
        _ => Ok(()),
    }
}

/// Lower-case hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A payload's canonical form and the hex SHA-256 of that form: what approvals pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub canonical: String,
    pub sha256: String,
}

/// Canonicalises a payload and hashes it.
pub fn pin(value: &Value) -> Result<Pinned, JsonError> {
    let canonical = canonicalize_value(value)?;
    let sha256 = sha256_hex(canonical.as_bytes());
    Ok(Pinned { canonical, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon_text(text: &str) -> String {
        canonicalize_value(&parse(text.as_bytes()).unwrap()).unwrap()
    }

    /// RFC 8785 section 3.2.2, the worked example.
    #[test]
    fn rfc8785_worked_example() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
        assert_eq!(canon_text(input), expected);
    }

    /// RFC 8785 appendix B: IEEE-754 bit patterns and their canonical text.
    #[test]
    fn rfc8785_number_serialisation() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, expected) in cases {
            let value = f64::from_bits(*bits);
            assert_eq!(canonicalize(&value).unwrap(), *expected, "bits {bits:#018x}");
            // The path every payload and event takes: from a value, and from text.
            assert_eq!(canonicalize_value(&Value::from(value)).unwrap(), *expected, "bits {bits:#018x}");
            assert_eq!(canon_text(&format!("[{expected}]")), format!("[{expected}]"), "bits {bits:#018x}");
            assert_eq!(pin(&Value::from(value)).unwrap().canonical, *expected, "bits {bits:#018x}");
        }
        assert!(canonicalize(&f64::NAN).is_err());
        assert!(canonicalize(&f64::INFINITY).is_err());
    }

    /// RFC 8785 section 3.2.3: properties sorted by UTF-16 code units, recursively.
    #[test]
    fn rfc8785_key_order_is_by_utf16_code_units() {
        let input = r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#;
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canon_text(input), expected);
    }

    #[test]
    fn string_escaping_follows_the_rfc() {
        let out = canon_text(r#"["\u0000\u001f\b\f\n\r\t", "\u007f", "</script>"]"#);
        assert_eq!(out, "[\"\\u0000\\u001f\\b\\f\\n\\r\\t\",\"\u{7f}\",\"</script>\"]");
    }

    #[test]
    fn numbers_jcs_would_change_are_refused() {
        for bad in [
            "1e400",
            "-1e400",
            "1e-400",
            "9007199254740993",
            "18446744073709551615",
            "123456789012345678901234567890",
            // The same whole numbers spelt with a point or an exponent.
            "9007199254740993.0",
            "9007199254740993e0",
            "900719925474099.3e1",
            "-18446744073709551615.000",
        ] {
            let text = format!("{{\"n\": {bad}}}");
            let err = parse(text.as_bytes()).unwrap_err();
            assert!(matches!(err, JsonError::Number { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        // These are represented exactly, or are decimals rounded as every JSON reader does.
        for good in [
            "9007199254740992",
            "9007199254740992.0",
            "1e21",
            "1000000000000000000000",
            "0.1",
            "-0",
            "0e99",
            "333333333.33333329",
            "1.5E3",
            "1.5e300",
            "1e23",
        ] {
            parse(format!("[{good}]").as_bytes()).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn nesting_is_bounded_and_positions_are_reported() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(parse(deep.as_bytes()), Err(JsonError::TooDeep { .. })));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let err = parse(b"{\n  \"a\": 1,\n  \"b\": @\n}").unwrap_err();
        assert_eq!(err.position().0, 3);
    }

    #[test]
    fn a_name_given_twice_in_one_object_is_refused_wherever_it_is() {
        let dup = |text: &str| match parse(text.as_bytes()) {
            Err(JsonError::DuplicateName { name, .. }) => Some(name),
            Ok(_) => None,
            Err(e) => panic!("{text}: {e}"),
        };
        assert_eq!(dup(r#"{"to": "a", "to": "b"}"#).as_deref(), Some(r#""to""#));
        let err = parse(b"{\n  \"x\": {\"a\": 1,\n    \"a\": 2}}").unwrap_err();
        assert_eq!(err.position(), (3, 5), "{err}");
        // Written differently, the same name.
        assert!(dup(r#"{"a": 1, "\u0061": 2}"#).is_some());
        // Past the small-object path.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        assert!(dup(&format!("{{{}, \"k7\": 0}}", many.join(", "))).is_some());
        assert!(dup(&format!("{{{}}}", many.join(", "))).is_none());
        // The same name in different objects, or as a value, or in an array, is fine.
        assert!(dup(r#"{"a": {"a": "a"}, "b": [{"a": 1}, {"a": 2}], "c": "a"}"#).is_none());
        assert!(dup(r#"[{"a": 1}, {"a": 1}]"#).is_none());
        // Broken text is a syntax error, whatever names it repeats before it breaks.
        assert!(matches!(parse(br#"{"a": 1, "a": "#), Err(JsonError::Syntax { .. })));
    }

    #[test]
    fn numbers_inside_strings_are_not_numbers() {
        assert!(parse(br#"{"id": "9007199254740993", "esc": "\"1e400"}"#).is_ok());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53)..(1i64 << 53)).prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The fast writer and the general canonicaliser agree byte for byte, keys from
        /// all over Unicode (including above U+FFFF, where UTF-16 order differs) included.
        #[test]
        fn the_fast_writer_matches_the_reference(v in arb_json(), k1 in "\\PC{0,4}", k2 in "[\u{E000}-\u{10FFFF}]{1,3}") {
            let mut obj = serde_json::Map::new();
            obj.insert(k1, v.clone());
            obj.insert(k2, Value::from("x"));
            obj.insert("\u{1f600}".into(), Value::from(1));
            for value in [v, Value::Object(obj)] {
                let mut fast = String::new();
                write_value(&value, &mut fast);
                prop_assert_eq!(fast, serde_json_canonicalizer::to_string(&value).unwrap());
            }
        }

        #[test]
        fn canonical_form_is_idempotent(v in arb_json()) {
            let once = canonicalize_value(&v).unwrap();
            let twice = canonicalize_value(&parse(once.as_bytes()).unwrap()).unwrap();
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn key_order_and_whitespace_never_change_the_hash(v in arb_json()) {
            let compact = serde_json::to_string(&v).unwrap();
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            // Reverse every object's key order in a third spelling.
            fn reversed(v: &Value) -> String {
                match v {
                    Value::Object(m) => {
                        let parts: Vec<String> = m.iter().rev()
                            .map(|(k, v)| format!("{} : {}", serde_json::to_string(k).unwrap(), reversed(v)))
                            .collect();
                        format!("{{ {} }}", parts.join(" ,\n "))
                    }
                    Value::Array(a) => format!("[ {} ]", a.iter().map(reversed).collect::<Vec<_>>().join(", ")),
                    other => serde_json::to_string(other).unwrap(),
                }
            }
            let hashes: Vec<String> = [compact, pretty, reversed(&v)].iter()
                .map(|t| pin(&parse(t.as_bytes()).unwrap()).unwrap().sha256)
                .collect();
            prop_assert_eq!(&hashes[0], &hashes[1]);
            prop_assert_eq!(&hashes[0], &hashes[2]);
        }
    }
}
