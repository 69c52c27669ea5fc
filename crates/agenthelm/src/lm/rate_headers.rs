//! What a service's answer says about its rate limits: how long until it takes requests again
//! when its headers say nothing is left.
//!
//! - OpenAI (and services copying it): `x-ratelimit-remaining-requests` / `-tokens` with
//!   `x-ratelimit-reset-requests` / `-tokens` as a Go-style duration (`1s`, `6m0s`, `20ms`).
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`
//!   with `-reset` as an RFC 3339 time.
//!
//! `Retry-After` is read with the answer's status in [`http`](super::http).

use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// OpenAI's pairs of (remaining, reset in a duration).
const OPENAI: &[(&str, &str)] = &[
    (
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
];

/// Anthropic's pairs of (remaining, reset at a time).
const ANTHROPIC: &[(&str, &str)] = &[
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

/// How long until the service takes requests again, when a rate-limit header says nothing is
/// left of some limit (the longest such wait); `None` when nothing is used up, or the reset
/// cannot be read.
pub(crate) fn exhausted_for(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let used_up = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok()) == Some(0);
    let openai = OPENAI
        .iter()
        .filter(|(remaining, _)| used_up(remaining))
        .filter_map(|(_, reset)| text(reset).and_then(go_duration));
    let anthropic = ANTHROPIC
        .iter()
        .filter(|(remaining, _)| used_up(remaining))
        .filter_map(|(_, reset)| text(reset).and_then(|at| until(at, now)));
    openai.chain(anthropic).max()
}

/// A Go-style duration, as OpenAI writes them: `1s`, `6m0s`, `1h2m3.5s`, `20ms`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut seconds = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        seconds += value * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// The time from `now` until an RFC 3339 time (zero when it has passed).
fn until(at: &str, now: SystemTime) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let at = SystemTime::from(at.with_timezone(&chrono::Utc));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(go_duration("7.66s"), Some(Duration::from_millis(7660)));
        for bad in ["", "s", "5", "5 s", "5x", "-1s", "1e3s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn openai_headers_pause_only_when_nothing_is_left() {
        let now = SystemTime::now();
        let exhausted = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(
            exhausted_for(&exhausted, now),
            Some(Duration::from_secs(360))
        );
        let left = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(exhausted_for(&left, now), None);
        assert_eq!(exhausted_for(&HeaderMap::new(), now), None);
        let unreadable = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "soon"),
        ]);
        assert_eq!(exhausted_for(&unreadable, now), None);
    }

    #[test]
    fn anthropic_headers_reset_at_a_time() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let exhausted = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2027-01-15T08:00:30Z"),
        ]);
        // 1_800_000_000 is 2027-01-15T08:00:00Z.
        assert_eq!(
            exhausted_for(&exhausted, now),
            Some(Duration::from_secs(30))
        );
        let offset = headers(&[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-tokens-reset",
                "2027-01-15T09:00:01.5+01:00",
            ),
        ]);
        assert_eq!(
            exhausted_for(&offset, now),
            Some(Duration::from_millis(1500))
        );
        let past = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2020-01-01T00:00:00Z"),
        ]);
        assert_eq!(exhausted_for(&past, now), Some(Duration::ZERO));
    }
}
