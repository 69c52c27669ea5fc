//! The web UI's session: a cookie holding the user's token (hex-encoded, `HttpOnly`,
//! `SameSite=Strict`), and the same-origin check that keeps other sites from using it.

use axum::http::{header, HeaderMap};

/// The name of the session cookie.
pub const COOKIE: &str = "agenthelm_session";

/// The token in the request's session cookie, if it has one.
pub fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find_map(from_hex)
}

/// The `Set-Cookie` value that signs the browser in with `token`.
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        to_hex(token)
    )
}

/// The `Set-Cookie` value that signs the browser out.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Whether the request comes from a page of this server: its `Origin` names the host it was
/// sent to, or (without `Origin`) the browser says `Sec-Fetch-Site: same-origin`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = text(header::HOST) else {
        return false;
    };
    match text(header::ORIGIN) {
        Some(origin) => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest == host),
        None => text(header::HeaderName::from_static("sec-fetch-site")) == Some("same-origin"),
    }
}

fn to_hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_cookie_carries_any_token_back() {
        let token = "a token; with=odd \"chars\"";
        let cookie = set_cookie(token);
        let value = cookie.split(';').next().unwrap();
        let sent = headers(&[("cookie", &format!("other=1; {value}"))]);
        assert_eq!(super::token(&sent).as_deref(), Some(token));
        assert_eq!(
            super::token(&headers(&[("cookie", "agenthelm_session=zz")])),
            None
        );
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    }

    #[test]
    fn only_the_servers_own_origin_is_same_origin() {
        let host = ("host", "127.0.0.1:7878");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:7878")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[host])));
    }
}
