//! The payload's structured fields, as a table an approver can scan: top-level fields,
//! recipients listed, amounts with their currency.

use serde_json::Value;

/// Keys that name recipients.
const RECIPIENT_KEYS: &[&str] = &["to", "cc", "bcc", "recipients", "recipient", "email", "emails"];
/// Keys that name money.
const AMOUNT_KEYS: &[&str] = &["amount", "total", "price", "value", "sum"];

/// What kind of field a row is, for styling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Recipients,
    Amount,
}

/// (field, value as text, kind) for each top-level field of an object payload.
pub fn rows(payload: &Value) -> Vec<(String, String, Kind)> {
    let Value::Object(map) = payload else {
        return vec![("(payload)".into(), summary(payload), Kind::Plain)];
    };
    let currency = map.get("currency").and_then(Value::as_str);
    map.iter()
        .map(|(k, v)| {
            let key = k.to_ascii_lowercase();
            if RECIPIENT_KEYS.contains(&key.as_str()) {
                let list = match v {
                    Value::Array(items) => items.iter().map(summary).collect::<Vec<_>>().join(", "),
                    other => summary(other),
                };
                let n = v.as_array().map_or(1, Vec::len);
                (format!("{k} ({n})"), list, Kind::Recipients)
            } else if AMOUNT_KEYS.contains(&key.as_str()) && v.is_number() {
                let text = match currency {
                    Some(c) => format!("{} {}", summary(v), c),
                    None => summary(v),
                };
                (k.clone(), text, Kind::Amount)
            } else {
                (k.clone(), summary(v), Kind::Plain)
            }
        })
        .collect()
}

/// A value in one line.
pub fn summary(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => super::printable(s),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => a.iter().map(summary).collect::<Vec<_>>().join(", "),
        Value::Array(a) => format!("[{} items]", a.len()),
        Value::Object(o) => format!("{{{} fields}}", o.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_and_amounts_are_recognised() {
        let r = rows(&serde_json::json!({"to": ["a@x.com", "b@x.com"], "amount": 1250, "currency": "EUR", "memo": "rent"}));
        assert!(r.contains(&("to (2)".into(), "a@x.com, b@x.com".into(), Kind::Recipients)));
        assert!(r.contains(&("amount".into(), "1250 EUR".into(), Kind::Amount)));
        assert!(r.contains(&("memo".into(), "rent".into(), Kind::Plain)));
    }
}
