//! The URLs Countersign calls — webhook receivers and `http` connectors — under one rule.
//!
//! A URL is shown by the API and kept in the audit log (and, for webhooks, in the events
//! other subscribers receive), so it may not carry anything secret: no user or password,
//! and no query parameter named like a credential. Those go where secrets are sealed and
//! masked (a connector's `secret_headers` or `secret_query`; a webhook needs none, its
//! deliveries being signed).

/// The longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Query parameter names that carry credentials by convention.
const CREDENTIAL_PARAMS: &[&str] = &[
    "key",
    "apikey",
    "api_key",
    "api-key",
    "access_token",
    "accesstoken",
    "auth",
    "auth_token",
    "token",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "sig",
    "signature",
];

/// Checks `url` (the request's `field`) and returns it as it will be called. `credentials`
/// says where credentials go instead, for the refusal.
pub fn check(field: &str, url: &str, credentials: &str) -> Result<reqwest::Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("`{field}` is at most {MAX_URL_LEN} bytes"));
    }
    // The parser drops tabs and line breaks, so `http://\t/x` would be read as `http:///x`
    // after the check below has looked at the text: no whitespace or control at all.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{field}` must not contain spaces, tabs, line breaks or control characters"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{field}` is not a URL: {e}"))?;
    // `http:///x` parses as `http://x/`: a host taken from the path is not the one meant.
    let host_written = url.split_once("://").is_some_and(|(_, rest)| !rest.starts_with('/'));
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) || !host_written {
        return Err(format!("`{field}` must be an http:// or https:// URL with a host"));
    }
    if parsed.fragment().is_some() {
        return Err(format!("`{field}` must not have a fragment (`#…`): it is never sent to the receiver"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("`{field}` must not carry credentials, where they would be shown and logged: {credentials}"));
    }
    if let Some((name, _)) = parsed.query_pairs().find(|(k, _)| CREDENTIAL_PARAMS.contains(&k.to_ascii_lowercase().as_str())) {
        return Err(format!(
            "`{}` in `{field}`'s query looks like a credential, and a URL is shown by the API and kept in the audit log: {credentials}",
            name.chars().filter(|c| !c.is_control()).take(60).collect::<String>()
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_url_called() {
        let ok = |u: &str| check("url", u, "elsewhere").map(|u| u.to_string());
        assert_eq!(ok("https://hooks.example.com/x?a=1").unwrap(), "https://hooks.example.com/x?a=1");
        assert!(ok("http://127.0.0.1:8080/hook").is_ok(), "loopback is allowed");
        for bad in [
            "ftp://example.com",
            "https://user:pw@example.com/",
            "not a url",
            "http://",
            "http:///x",
            "http://\t/evil.example",
            "https://example.com/a b",
            "https://example.com/#frag",
            "file:///etc/passwd",
            "https://example.com/hook?token=abc",
            "https://example.com/hook?a=1&API_KEY=abc",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
        assert!(ok(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
        let refusal = check("connector.url", "https://x.example/?token=abc", "put it in connector.secret_query").unwrap_err();
        assert!(refusal.contains("`token`") && refusal.contains("connector.url") && !refusal.contains("abc"), "{refusal}");
    }
}
