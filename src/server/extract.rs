//! Request extractors with our error shape: JSON bodies and query strings.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::canonical::{self, JsonError};
use crate::error::{Error, Kind};

/// The most bytes a request body may have. Explicit and documented (docs/API.md).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a request's body may take to arrive, whole (a layer puts it on every
/// request; without one, the default of [`super::ServerConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline(pub std::time::Duration);

/// A JSON body, checked the way every body is: not empty, UTF-8, syntactically JSON,
/// nested no deeper than [`canonical::MAX_DEPTH`], numbers that survive RFC 8785, and
/// the shape of `T` (unknown fields refused).
pub struct Body<T>(pub T);

/// The same checks, also keeping the raw bytes (for idempotency fingerprints).
pub struct RawBody<T> {
    pub value: T,
    pub bytes: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody { value, .. } = RawBody::<T>::from_request(req, state).await?;
        Ok(Body(value))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for RawBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A compressed body would be read as its compressed bytes: say so rather than
        // call it malformed JSON.
        if let Some(enc) = req.headers().get(axum::http::header::CONTENT_ENCODING)
            && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            return Err(Error::new(
                Kind::UnsupportedMediaType,
                "unsupported_content_encoding",
                "request bodies are not accepted compressed (Content-Encoding): send the JSON as it is",
            ));
        }
        let deadline = req.extensions().get::<BodyDeadline>().map_or(super::READ_TIMEOUT, |d| d.0);
        let read = tokio::time::timeout(deadline, Bytes::from_request(req, state)).await.map_err(|_| {
            Error::new(
                Kind::RequestTimeout,
                "request_timeout",
                format!("the request body did not arrive within {} s; nothing was done", deadline.as_secs_f64()),
            )
        })?;
        let bytes = read.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(
                    Kind::PayloadTooLarge,
                    "payload_too_large",
                    format!("the request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
                )
            } else {
                Error::bad_request("unreadable_body", format!("the request body could not be read: {e}"))
            }
        })?;
        let value = parse_body(&bytes)?;
        Ok(RawBody { value, bytes })
    }
}

/// Parses a body by the rules above.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_request("empty_body", "this request needs a JSON body"));
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(Error::bad_request("invalid_utf8", format!("the body is not valid UTF-8 (bad byte at offset {})", e.valid_up_to())));
    }
    // Every body is an object. serde would take an array for a struct, field by field
    // in order (`["write", false, "auto", …]`), which nobody means and the API does not
    // promise.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(Error::unprocessable("invalid_field", "the body must be a JSON object: `{…}`"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    match parsed {
        Ok(value) => {
            // Trailing garbage after the document is a syntax error too.
            de.end().map_err(|e| json_error(JsonError::from_serde(&e)))?;
            canonical::check_json_text(bytes).map_err(json_error)?;
            Ok(value)
        }
        Err(e) => {
            let inner = e.inner();
            // Judge the whole text before its shape: serde stops at the first wrongly
            // shaped value, and that must not hide a body that is not JSON at all
            // (`{} {}`, or a body cut short after a wrongly typed field): that is a 400
            // `malformed_json`, not a 422 about one field.
            if inner.is_data()
                && let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            {
                return Err(json_error(canonical::check_broken_json_text(bytes).unwrap_or_else(|| JsonError::from_serde(&syntax))));
            }
            if inner.is_data() {
                // Prefer our own number message if that is what went wrong.
                if let Err(j) = canonical::check_json_text(bytes) {
                    return Err(json_error(j));
                }
                let path = e.path().to_string();
                let what = plain_words(&without_values(&strip_position(&inner.to_string())));
                let message = if path == "." || path.is_empty() { what } else { format!("{path}: {what}") };
                Err(Error::unprocessable("invalid_field", message))
            } else if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
                // The text is JSON, but serde calls a value of the wrong type where a
                // named value belongs (`"kind": null`) a syntax error: it is a field's —
                // unless it is a number JSON allows and RFC 8785 cannot keep (`1e400`).
                if let Err(j) = canonical::check_json_text(bytes) {
                    return Err(json_error(j));
                }
                let path = e.path().to_string();
                Err(Error::unprocessable(
                    "invalid_field",
                    format!("{path}: wrong type: expected a string naming one of its documented values"),
                ))
            } else {
                Err(json_error(canonical::check_broken_json_text(bytes).unwrap_or_else(|| JsonError::from_serde(inner))))
            }
        }
    }
}

/// serde names a wrongly typed value by the value itself (`invalid type: integer
/// `4111111111111111``): it may be a secret sent in the wrong place, so only its kind is
/// said, as for strings below.
fn without_values(s: &str) -> String {
    let mut s = without_strings(s);
    for (kind, says) in [("integer `", "a whole number"), ("floating point `", "a number"), ("boolean `", "a boolean")] {
        while let Some(start) = s.find(kind) {
            let after = &s[start + kind.len()..];
            let end = after.find('`').map_or(s.len(), |i| start + kind.len() + i + 1);
            s = format!("{}{says}{}", &s[..start], &s[end..]);
        }
    }
    s
}

/// serde's words for types are Rust's (`expected f64`, `internally tagged enum
/// Connector`); a client reads JSON's.
fn plain_words(s: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("invalid type: ", "wrong type: "),
        ("wrong type: map", "wrong type: an object"),
        ("wrong type: sequence", "wrong type: an array"),
        ("expected internally tagged enum Connector", "expected an object with a `type` of `record` or `http`"),
        ("expected variant identifier", "expected one of the documented values"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("expected a boolean", "expected `true` or `false`"),
    ];
    let mut s = s.to_string();
    for (from, to) in WORDS {
        s = s.replace(from, to);
    }
    if let Some(i) = s.find("expected struct ") {
        let rest = &s[i + "expected struct ".len()..];
        let end = rest.find(|c: char| !c.is_alphanumeric() && c != '_').unwrap_or(rest.len());
        s = format!("{}expected an object{}", &s[..i], &rest[end..]);
    }
    s
}

/// serde names a wrongly typed string by its value (`invalid type: string "Bearer …",
/// expected a map`, `unknown variant `Bearer …``); the value may be a secret sent in the
/// wrong place, and an error message is shown and logged. Say only what kind of value it
/// was.
fn without_strings(s: &str) -> String {
    let s = without_quoted_strings(s);
    match s.split_once("unknown variant `") {
        Some((before, rest)) => match rest.split_once('`') {
            Some((_, after)) => format!("{before}an unknown value{after}"),
            None => format!("{before}an unknown value"),
        },
        None => s,
    }
}

fn without_quoted_strings(s: &str) -> String {
    let Some(start) = s.find("string \"") else { return s.to_string() };
    let value = &s[start + "string \"".len()..];
    // The value is written escaped (`{:?}`): its end is the first unescaped quote.
    let mut escaped = false;
    let end = value.char_indices().find(|&(_, c)| {
        let at_end = c == '"' && !escaped;
        escaped = c == '\\' && !escaped;
        at_end
    });
    match end {
        Some((i, _)) => format!("{}a string{}", &s[..start], without_quoted_strings(&value[i + 1..])),
        None => format!("{}a string", &s[..start]),
    }
}

fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

fn json_error(e: JsonError) -> Error {
    match e {
        JsonError::Syntax { .. } => Error::bad_request("malformed_json", format!("the body is not valid JSON: {e}")),
        JsonError::TooDeep { .. } => Error::bad_request("nesting_too_deep", e.to_string()),
        JsonError::Number { .. } => Error::unprocessable("unrepresentable_number", e.to_string()),
        JsonError::DuplicateName { .. } => Error::unprocessable("duplicate_name", e.to_string()),
    }
}

/// For a PATCH body's fields: left out means "keep it"; `null` is refused, not read as
/// left out — a client sending `null` to clear a field would otherwise hear it succeeded.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    match <Option<T> as serde::Deserialize>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom("null is not a value here: leave the field out to keep it as it is")),
    }
}

/// A query string parsed into `T`, refusing unknown parameters with our error shape.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded_parse(q).map(Query)
    }
}

fn serde_urlencoded_parse<T: DeserializeOwned>(q: &str) -> Result<T, Error> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner().to_string();
        // Numbers arrive as text: say what the parameter takes, not how parsing failed.
        let says = if inner.contains("invalid digit") || inner.contains("number too large") || inner.contains("invalid float") {
            "must be a number".to_string()
        } else {
            plain_words(&without_values(&inner))
        };
        match field.as_str() {
            "" | "." => Error::bad_request("invalid_query", format!("the query string is not valid: {says}")),
            _ => Error::bad_request("invalid_query", format!("`{field}` {says}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{plain_words, without_strings, without_values};

    #[test]
    fn a_bad_query_parameter_is_named_with_what_it_takes() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Q {
            after_seq: Option<i64>,
            limit: Option<i64>,
        }
        let message = |q: &str| super::serde_urlencoded_parse::<Q>(q).unwrap_err().message;
        assert_eq!(message("after_seq=abc"), "`after_seq` must be a number");
        assert_eq!(message("limit=99999999999999999999999"), "`limit` must be a number");
        assert!(message("colour=red").contains("unknown field `colour`"), "{}", message("colour=red"));
        assert!(super::serde_urlencoded_parse::<Q>("after_seq=5&limit=2").is_ok());
    }

    #[test]
    fn no_value_is_repeated_and_types_are_named_as_json_names_them() {
        assert_eq!(
            plain_words(&without_values("invalid type: integer `4111111111111111`, expected a string")),
            "wrong type: a whole number, expected a string"
        );
        assert_eq!(
            plain_words(&without_values("invalid type: floating point `1.5`, expected u64")),
            "wrong type: a number, expected a whole number"
        );
        assert_eq!(plain_words(&without_values("invalid type: boolean `true`, expected f64")), "wrong type: a boolean, expected a number");
        assert_eq!(plain_words("invalid type: sequence, expected struct SubmitAction"), "wrong type: an array, expected an object");
        assert_eq!(plain_words("invalid type: sequence, expected a map"), "wrong type: an array, expected an object");
    }

    #[test]
    fn strings_in_messages_are_named_not_repeated() {
        assert_eq!(without_strings(r#"invalid type: string "Bearer sk_1", expected a map"#), "invalid type: a string, expected a map");
        // Escaped quotes and backslashes inside the value do not end it early.
        assert_eq!(without_strings(r#"invalid type: string "a\"b\\", expected a map"#), "invalid type: a string, expected a map");
        assert_eq!(without_strings(r#"x: string "1" and string "2""#), "x: a string and a string");
        assert_eq!(without_strings("missing field `email`"), "missing field `email`");
        assert_eq!(
            without_strings("unknown variant `Bearer sk_1`, expected `record` or `http`"),
            "an unknown value, expected `record` or `http`"
        );
    }
}
