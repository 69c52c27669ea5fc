//! Where spans go: the collector's endpoint, headers and timeout, and the request that sends them.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use std::fmt;
use std::time::Duration;

use super::spans::spans_of;
use super::wire::{ExportBody, Span};
use crate::trace::Event;
use serde_json::Value;

/// The environment variable naming the collector's base URL.
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The environment variable naming the exact URL for traces (takes precedence over
/// [`ENDPOINT_ENV`]; nothing is appended to it).
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The environment variable with extra request headers, `key=value,key2=value2`.
pub const HEADERS_ENV: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// How long one export may take unless [`OtlpExporter::timeout`] says otherwise (the
/// OpenTelemetry default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most spans sent in one request, which keeps each body well under collectors' size limits.
pub const MAX_SPANS_PER_REQUEST: usize = 1000;

/// Why an export could not be set up or did not go through. Header values never appear here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// The endpoint is not an `http` or `https` URL.
    #[error("OTLP endpoint `{endpoint}` is not usable: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given (credentials in it masked).
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header (from `OTEL_EXPORTER_OTLP_HEADERS` or [`OtlpExporter::header`]) is malformed.
    #[error("OTLP header {position}: {reason}")]
    InvalidHeader {
        /// Which header: its name, or its position in the list when it has no usable name.
        position: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No answer in time.
    #[error("OTLP export to {url} timed out after {after:?}")]
    Timeout {
        /// Where the spans were sent.
        url: String,
        /// The time allowed.
        after: Duration,
    },
    /// The collector could not be reached (refused, unknown host, TLS failure...).
    #[error("OTLP export to {url} failed: {message}")]
    Unreachable {
        /// Where the spans were sent.
        url: String,
        /// What the HTTP client reported.
        message: String,
    },
    /// The collector answered with a status other than 2xx.
    #[error("OTLP collector at {url} answered HTTP {status}: {body}")]
    Rejected {
        /// Where the spans were sent.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The collector accepted the request but dropped some spans.
    #[error("OTLP collector at {url} rejected {rejected} of {sent} spans: {message}")]
    PartiallyRejected {
        /// Where the spans were sent.
        url: String,
        /// Spans sent.
        sent: usize,
        /// Spans the collector dropped.
        rejected: u64,
        /// Its explanation.
        message: String,
    },
}

/// Sends spans to an OpenTelemetry collector over OTLP/HTTP with JSON.
///
/// ```
/// use agenthelm::otlp::OtlpExporter;
/// let exporter = OtlpExporter::new("http://127.0.0.1:4318")?
///     .header("x-tenant", "team-a")?
///     .timeout(std::time::Duration::from_secs(5));
/// assert_eq!(exporter.traces_url(), "http://127.0.0.1:4318/v1/traces");
/// assert!(OtlpExporter::new("127.0.0.1:4318").is_err()); // no scheme
/// # Ok::<(), agenthelm::otlp::OtlpError>(())
/// ```
#[derive(Clone)]
pub struct OtlpExporter {
    url: Url,
    headers: HeaderMap,
    timeout: Duration,
    client: reqwest::Client,
}

impl fmt::Debug for OtlpExporter {
    // Header values may be API keys: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("OtlpExporter")
            .field("url", &masked(&self.url))
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OtlpExporter {
    /// An exporter to the collector at `endpoint`, its base URL (`http://host:4318`): spans go
    /// to `{endpoint}/v1/traces`. Errors when the endpoint is not an `http`/`https` URL with a
    /// host.
    pub fn new(endpoint: &str) -> Result<Self, OtlpError> {
        let mut url = validated(endpoint)?;
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Ok(Self::to(url))
    }

    /// An exporter that posts to `url` exactly as given, like
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (no `/v1/traces` is added).
    ///
    /// ```
    /// use agenthelm::otlp::OtlpExporter;
    /// let exporter = OtlpExporter::with_traces_url("https://otel.example/ingest/traces")?;
    /// assert_eq!(exporter.traces_url(), "https://otel.example/ingest/traces");
    /// # Ok::<(), agenthelm::otlp::OtlpError>(())
    /// ```
    pub fn with_traces_url(url: &str) -> Result<Self, OtlpError> {
        validated(url).map(Self::to)
    }

    fn to(url: Url) -> Self {
        OtlpExporter {
            url,
            headers: HeaderMap::new(),
            timeout: DEFAULT_TIMEOUT,
            client: reqwest::Client::new(),
        }
    }

    /// The exporter the environment asks for: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
    /// it is) or else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, as in [`new`](Self::new)), with
    /// the headers of `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,key2=value2`, values
    /// percent-decoded). `None` when neither endpoint is set (or both are empty).
    pub fn from_env() -> Option<Result<Self, OtlpError>> {
        from_lookup(|name| std::env::var(name).ok())
    }

    /// Adds a header to every export (an API key, a tenant). Its value is never shown.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, OtlpError> {
        let invalid = |reason: &str| OtlpError::InvalidHeader {
            position: format!("`{name}`"),
            reason: reason.to_owned(),
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| invalid("not a valid header name"))?;
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| invalid("its value has characters a header cannot carry"))?;
        value.set_sensitive(true);
        self.headers.append(name, value);
        Ok(self)
    }

    /// How long one export may take (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where spans are sent: `{endpoint}/v1/traces`.
    pub fn traces_url(&self) -> &str {
        self.url.as_str()
    }

    /// Sends the spans of a finished run's `events` (see [`spans_of`]) and returns how many
    /// were sent. Nothing is sent when there are no spans; a large run goes in requests of at
    /// most [`MAX_SPANS_PER_REQUEST`] spans, and the first request that fails stops the export
    /// with its error.
    pub async fn export(&self, events: &[Event]) -> Result<usize, OtlpError> {
        let spans = spans_of(events);
        for batch in spans.chunks(MAX_SPANS_PER_REQUEST) {
            self.send(batch).await?;
        }
        Ok(spans.len())
    }

    async fn send(&self, spans: &[Span]) -> Result<(), OtlpError> {
        let url = masked(&self.url);
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.timeout)
            .json(&ExportBody::new(spans))
            .send()
            .await
            .map_err(|e| self.send_error(&url, e))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(OtlpError::Rejected {
                url,
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        // A 2xx may still report spans it dropped (`partialSuccess`).
        if let Ok(answer) = serde_json::from_str::<Value>(&body) {
            let partial = &answer["partialSuccess"];
            let rejected = match &partial["rejectedSpans"] {
                Value::String(s) => s.parse().unwrap_or(0),
                v => v.as_u64().unwrap_or(0),
            };
            if rejected > 0 {
                return Err(OtlpError::PartiallyRejected {
                    url,
                    sent: spans.len(),
                    rejected,
                    message: partial["errorMessage"].as_str().unwrap_or("").to_owned(),
                });
            }
        }
        Ok(())
    }

    fn send_error(&self, url: &str, error: reqwest::Error) -> OtlpError {
        if error.is_timeout() {
            return OtlpError::Timeout {
                url: url.to_owned(),
                after: self.timeout,
            };
        }
        // The source chain says why (connection refused, DNS...); the URL is given separately.
        let error = error.without_url();
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        OtlpError::Unreachable {
            url: url.to_owned(),
            message,
        }
    }
}

/// [`OtlpExporter::from_env`] over any source of variables (tests use a map).
pub(super) fn from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<Result<OtlpExporter, OtlpError>> {
    let set = |name| lookup(name).filter(|v: &String| !v.trim().is_empty());
    let exporter = match (set(TRACES_ENDPOINT_ENV), set(ENDPOINT_ENV)) {
        (Some(url), _) => OtlpExporter::with_traces_url(&url),
        (None, Some(endpoint)) => OtlpExporter::new(&endpoint),
        (None, None) => return None,
    };
    let with_headers = |mut exporter: OtlpExporter| {
        for (name, value) in parse_headers(&lookup(HEADERS_ENV).unwrap_or_default())? {
            exporter = exporter.header(&name, &value)?;
        }
        Ok(exporter)
    };
    Some(exporter.and_then(with_headers))
}

/// `endpoint` as a URL, if it is an `http`/`https` URL with a host and no query.
pub(super) fn validated(endpoint: &str) -> Result<Url, OtlpError> {
    let endpoint = endpoint.trim();
    let invalid = |reason: String| OtlpError::InvalidEndpoint {
        endpoint: Url::parse(endpoint)
            .map(|u| masked(&u))
            .unwrap_or_else(|_| endpoint.to_owned()),
        reason,
    };
    if !endpoint.contains("://") {
        return Err(invalid(format!(
            "it has no scheme (did you mean `http://{endpoint}`?)"
        )));
    }
    let url = Url::parse(endpoint).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme must be http or https, not `{}`",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment".to_owned()));
    }
    Ok(url)
}

/// `key=value,key2=value2` as pairs, values percent-decoded (the OTLP exporter spec's format).
/// Errors name the entry by position or key, never by value.
fn parse_headers(list: &str) -> Result<Vec<(String, String)>, OtlpError> {
    let mut headers = Vec::new();
    for (n, entry) in list.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let position = || format!("{} in {HEADERS_ENV}", n + 1);
        let Some((key, value)) = entry.split_once('=') else {
            return Err(OtlpError::InvalidHeader {
                position: position(),
                reason: "expected key=value".to_owned(),
            });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(OtlpError::InvalidHeader {
                position: position(),
                reason: "the key is empty".to_owned(),
            });
        }
        let value = percent_decode(value.trim()).ok_or_else(|| OtlpError::InvalidHeader {
            position: format!("`{key}` in {HEADERS_ENV}"),
            reason: "its value has a bad percent-escape".to_owned(),
        })?;
        headers.push((key.to_owned(), value));
    }
    Ok(headers)
}

pub(super) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced by `***`.
pub(super) fn masked(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

/// The start of a collector's answer, for an error message.
fn snippet(body: &str) -> String {
    let body = body.trim();
    if body.chars().count() <= 300 {
        return body.to_owned();
    }
    let mut cut: String = body.chars().take(300).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn endpoints_are_validated() {
        let ok = OtlpExporter::new(" https://collector.example:4318/otlp/ ").unwrap();
        assert_eq!(
            ok.traces_url(),
            "https://collector.example:4318/otlp/v1/traces"
        );
        for (bad, why) in [
            (
                "127.0.0.1:4318",
                "no scheme (did you mean `http://127.0.0.1:4318`?)",
            ),
            ("localhost:4318", "no scheme"),
            ("ftp://host", "scheme must be http or https, not `ftp`"),
            ("http://", "empty host"),
            ("http://host:4318?x=1", "query"),
            ("", "no scheme"),
        ] {
            let error = OtlpExporter::new(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(error.contains("OTLP endpoint"), "{error}");
        }
        // A password in the URL is masked in errors and Debug.
        let error = OtlpExporter::new("ftp://user:hunter2@host")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
        let exporter = OtlpExporter::new("http://user:hunter2@host").unwrap();
        assert!(!format!("{exporter:?}").contains("hunter2"));
    }

    #[test]
    fn the_environment_configures_the_exporter() {
        assert!(from_lookup(env(&[])).is_none());
        assert!(from_lookup(env(&[(ENDPOINT_ENV, "  ")])).is_none());
        let exporter = from_lookup(env(&[
            (ENDPOINT_ENV, "http://127.0.0.1:4318"),
            (HEADERS_ENV, "api-key=s3cr%3Dt%20x, x-tenant = team-a ,"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(exporter.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(exporter.headers["api-key"], "s3cr=t x");
        assert_eq!(exporter.headers["x-tenant"], "team-a");
        let debug = format!("{exporter:?}");
        assert!(
            debug.contains("api-key") && !debug.contains("s3cr"),
            "{debug}"
        );

        // The signal-specific URL wins and is used as it is.
        let exporter = from_lookup(env(&[
            (ENDPOINT_ENV, "http://127.0.0.1:4318"),
            (TRACES_ENDPOINT_ENV, "http://127.0.0.1:9999/custom/traces"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(exporter.traces_url(), "http://127.0.0.1:9999/custom/traces");

        let error = from_lookup(env(&[(ENDPOINT_ENV, "localhost:4318")]))
            .unwrap()
            .unwrap_err();
        assert!(matches!(error, OtlpError::InvalidEndpoint { .. }));
    }

    #[test]
    fn bad_headers_are_named_without_their_values() {
        for (list, expected) in [
            ("a=1,secretvalue", "OTLP header 2 in OTEL_EXPORTER_OTLP_HEADERS: expected key=value"),
            ("=secretvalue", "OTLP header 1 in OTEL_EXPORTER_OTLP_HEADERS: the key is empty"),
            ("key=secret%zz", "OTLP header `key` in OTEL_EXPORTER_OTLP_HEADERS: its value has a bad percent-escape"),
            ("bad key=secretvalue", "OTLP header `bad key`: not a valid header name"),
            ("key=secret%0Avalue", "OTLP header `key`: its value has characters a header cannot carry"),
        ] {
            let error = from_lookup(env(&[(ENDPOINT_ENV, "http://h"), (HEADERS_ENV, list)]))
                .unwrap()
                .unwrap_err()
                .to_string();
            assert_eq!(error, expected);
            assert!(!error.contains("secret"));
        }
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes() {
        assert_eq!(percent_decode("a%20b%2Cc").as_deref(), Some("a b,c"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }
}
