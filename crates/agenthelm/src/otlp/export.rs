//! Where spans go (the collector's endpoint, headers, timeout and protocol), and the export of
//! a run's spans through the OpenTelemetry SDK's OTLP/HTTP exporter.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SpanExporter as _;
use opentelemetry_sdk::Resource;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;

use super::spans::spans_of;
use super::transport::{Transport, Trouble};
use crate::trace::Event;

/// The environment variable naming the collector's base URL.
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The environment variable naming the exact URL for traces (takes precedence over
/// [`ENDPOINT_ENV`]; nothing is appended to it).
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The environment variable with extra request headers, `key=value,key2=value2`.
pub const HEADERS_ENV: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// The same for traces only; when set, the SDK uses it instead of [`HEADERS_ENV`].
pub const TRACES_HEADERS_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
/// The environment variable with the export timeout in milliseconds.
pub const TIMEOUT_ENV: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// The same for traces only (takes precedence over [`TIMEOUT_ENV`]).
pub const TRACES_TIMEOUT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
/// The environment variable naming the encoding: `http/protobuf` (the default) or `http/json`.
pub const PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The same for traces only (takes precedence over [`PROTOCOL_ENV`]).
pub const TRACES_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// How long one export may take unless [`OtlpExporter::timeout`] or the environment says
/// otherwise (the OpenTelemetry default).
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
    /// Another setting from the environment is malformed.
    #[error("{variable}: {reason}")]
    InvalidSetting {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The SDK could not build its exporter (an unsupported compression, say).
    #[error("OTLP exporter for {url} cannot be set up: {message}")]
    Setup {
        /// Where the spans were to go.
        url: String,
        /// What the SDK reported.
        message: String,
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

/// Sends spans to an OpenTelemetry collector over OTLP/HTTP, with the SDK's exporter:
/// protobuf unless [`protocol`](Self::protocol) or `OTEL_EXPORTER_OTLP_PROTOCOL=http/json` says
/// JSON. The SDK also reads the headers, compression and resource (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`) from the environment; the endpoint, headers, timeout and protocol
/// variables are checked here first, so that a malformed one is an error naming it.
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
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Option<Duration>,
    protocol: Option<Protocol>,
    client: reqwest::Client,
}

impl fmt::Debug for OtlpExporter {
    // Header values may be API keys: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpExporter")
            .field("url", &masked(&self.url))
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("protocol", &self.protocol)
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
            headers: Vec::new(),
            timeout: None,
            protocol: None,
            client: reqwest::Client::new(),
        }
    }

    /// The exporter the environment asks for: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
    /// it is) or else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, as in [`new`](Self::new)).
    /// `None` when neither endpoint is set (or both are empty). The headers variables are
    /// checked here, so that a malformed entry is an error naming the variable rather than a
    /// header the SDK leaves out in silence; the timeout variables too.
    pub fn from_env() -> Option<Result<Self, OtlpError>> {
        from_lookup(|name| std::env::var(name).ok())
    }

    /// Adds a header to every export (an API key, a tenant). Its value is never shown.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, OtlpError> {
        let header = checked_header(name, value).map_err(|reason| OtlpError::InvalidHeader {
            position: format!("`{name}`"),
            reason: reason.to_owned(),
        })?;
        self.headers.push(header);
        Ok(self)
    }

    /// How long one export may take (default: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`, else [`DEFAULT_TIMEOUT`]). Transient failures are retried
    /// within it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The encoding: [`Protocol::HttpBinary`] (protobuf) or [`Protocol::HttpJson`]. Default:
    /// what `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL` say
    /// (`http/protobuf`, `http/json`), else protobuf.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
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
        if spans.is_empty() {
            return Ok(0);
        }
        let timeout = self.resolved_timeout(&|name| std::env::var(name).ok())?;
        let transport = Transport::new(self.client.clone(), timeout);
        let exporter = self.sdk_exporter(transport.clone(), timeout)?;
        let url = masked(&self.url);
        for batch in spans.chunks(MAX_SPANS_PER_REQUEST) {
            let sent = exporter.export(batch.to_vec()).await;
            let trouble = transport.take_trouble();
            match (sent, trouble) {
                (Ok(()), None) => {}
                (Ok(()), Some(Trouble::Dropped(rejected, message))) => {
                    return Err(OtlpError::PartiallyRejected {
                        url,
                        sent: batch.len(),
                        rejected,
                        message,
                    })
                }
                // A retry went through after a failure.
                (Ok(()), Some(_)) => {}
                (Err(error), trouble) => {
                    return Err(failure(url, timeout, trouble, error.to_string()))
                }
            }
        }
        Ok(spans.len())
    }

    /// The SDK's exporter, sending through `transport` (which must time requests out after
    /// `timeout`).
    pub(super) fn sdk_exporter(
        &self,
        transport: Transport,
        timeout: Duration,
    ) -> Result<opentelemetry_otlp::SpanExporter, OtlpError> {
        check_env_headers(&|name| std::env::var(name).ok())?;
        let headers: HashMap<String, String> = self
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(self.url.as_str())
            .with_timeout(timeout)
            .with_http_client(transport)
            .with_headers(headers);
        // Always set: with both encodings built in, the SDK's own default would be JSON.
        builder = builder.with_protocol(self.resolved_protocol(&|name| std::env::var(name).ok())?);
        let mut exporter = builder.build().map_err(|e| OtlpError::Setup {
            url: masked(&self.url),
            message: e.to_string(),
        })?;
        exporter.set_resource(&resource());
        Ok(exporter)
    }

    /// The timeout: as set, else from the environment, else the default.
    pub(super) fn resolved_timeout(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Duration, OtlpError> {
        if let Some(timeout) = self.timeout {
            return Ok(timeout);
        }
        for variable in [TRACES_TIMEOUT_ENV, TIMEOUT_ENV] {
            let Some(value) = lookup(variable).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            return value
                .trim()
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| OtlpError::InvalidSetting {
                    variable,
                    reason: format!("`{value}` is not a number of milliseconds"),
                });
        }
        Ok(DEFAULT_TIMEOUT)
    }

    /// The encoding: as set, else from the environment, else protobuf (OTLP's default).
    pub(super) fn resolved_protocol(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Protocol, OtlpError> {
        if let Some(protocol) = self.protocol {
            return Ok(protocol);
        }
        for variable in [TRACES_PROTOCOL_ENV, PROTOCOL_ENV] {
            let Some(value) = lookup(variable).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            return match value.trim().to_ascii_lowercase().as_str() {
                "http/protobuf" => Ok(Protocol::HttpBinary),
                "http/json" => Ok(Protocol::HttpJson),
                _ => Err(OtlpError::InvalidSetting {
                    variable,
                    reason: format!(
                        "`{value}` is not supported: use `http/protobuf` or `http/json`"
                    ),
                }),
            };
        }
        Ok(Protocol::HttpBinary)
    }

    pub(super) fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// The error for a failed export: what the transport saw, else what the SDK said.
fn failure(url: String, after: Duration, trouble: Option<Trouble>, sdk: String) -> OtlpError {
    match trouble {
        Some(Trouble::Timeout) => OtlpError::Timeout { url, after },
        Some(Trouble::Unreachable(message)) => OtlpError::Unreachable { url, message },
        Some(Trouble::Rejected(status, body)) => OtlpError::Rejected { url, status, body },
        Some(Trouble::Dropped(..)) | None => OtlpError::Unreachable { url, message: sdk },
    }
}

/// The resource spans are sent with: the SDK's, read from the environment (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with `service.name` `agenthelm` unless they name one.
pub(super) fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder().with_service_name("agenthelm").build()
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
    let checked = |exporter: OtlpExporter| {
        check_env_headers(&lookup)?;
        exporter.resolved_timeout(&lookup)?;
        exporter.resolved_protocol(&lookup)?;
        Ok(exporter)
    };
    Some(exporter.and_then(checked))
}

/// Checks the headers variable the SDK will read (the traces one when set, else the general
/// one): each entry `key=value` with a valid name and value. The SDK skips a malformed entry in
/// silence, which would send spans without, say, their API key.
fn check_env_headers(lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), OtlpError> {
    let (variable, list) = match lookup(TRACES_HEADERS_ENV) {
        Some(list) => (TRACES_HEADERS_ENV, list),
        None => (HEADERS_ENV, lookup(HEADERS_ENV).unwrap_or_default()),
    };
    for (name, value) in parse_headers(variable, &list)? {
        checked_header(&name, &value).map_err(|reason| OtlpError::InvalidHeader {
            position: format!("`{name}` in {variable}"),
            reason: reason.to_owned(),
        })?;
    }
    Ok(())
}

/// A header as HTTP carries it, its value marked sensitive; else what is wrong with it.
fn checked_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), &'static str> {
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| "not a valid header name")?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| "its value has characters a header cannot carry")?;
    value.set_sensitive(true);
    Ok((name, value))
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
fn parse_headers(variable: &str, list: &str) -> Result<Vec<(String, String)>, OtlpError> {
    let mut headers = Vec::new();
    for (n, entry) in list.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let position = || format!("{} in {variable}", n + 1);
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
        let invalid = |reason: &str| OtlpError::InvalidHeader {
            position: format!("`{key}` in {variable}"),
            reason: reason.to_owned(),
        };
        let value = percent_decode(value.trim())
            .ok_or_else(|| invalid("its value has a bad percent-escape"))?;
        if value.is_empty() {
            return Err(invalid("its value is empty"));
        }
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

/// `url` with any password replaced by `***`.
pub(super) fn masked_url(url: &str) -> String {
    Url::parse(url).map_or_else(|_| url.to_owned(), |u| masked(&u))
}

/// The URL with any password replaced by `***`.
pub(super) fn masked(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
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
        let exporter = exporter.header("x-extra", "s3cr3t").unwrap();
        let debug = format!("{exporter:?}");
        assert!(
            debug.contains("x-extra") && !debug.contains("s3cr3t"),
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
    fn the_timeout_comes_from_code_then_the_environment() {
        let exporter = OtlpExporter::new("http://h").unwrap();
        let timeout = |vars: &[(&str, &str)]| exporter.resolved_timeout(&env(vars));
        assert_eq!(timeout(&[]).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout(&[(TIMEOUT_ENV, "250")]).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            timeout(&[(TIMEOUT_ENV, "250"), (TRACES_TIMEOUT_ENV, "70")]).unwrap(),
            Duration::from_millis(70)
        );
        assert_eq!(
            timeout(&[(TIMEOUT_ENV, "soon")]).unwrap_err().to_string(),
            "OTEL_EXPORTER_OTLP_TIMEOUT: `soon` is not a number of milliseconds"
        );
        let set = exporter.clone().timeout(Duration::from_secs(1));
        assert_eq!(
            set.resolved_timeout(&env(&[(TIMEOUT_ENV, "soon")]))
                .unwrap(),
            Duration::from_secs(1)
        );
        let error = from_lookup(env(&[(ENDPOINT_ENV, "http://h"), (TIMEOUT_ENV, "-1")]))
            .unwrap()
            .unwrap_err();
        assert!(matches!(
            error,
            OtlpError::InvalidSetting {
                variable: TIMEOUT_ENV,
                ..
            }
        ));
    }

    #[test]
    fn the_protocol_is_protobuf_unless_json_is_asked_for() {
        let exporter = OtlpExporter::new("http://h").unwrap();
        let protocol = |vars: &[(&str, &str)]| exporter.resolved_protocol(&env(vars));
        assert_eq!(protocol(&[]).unwrap(), Protocol::HttpBinary);
        assert_eq!(
            protocol(&[(PROTOCOL_ENV, "HTTP/JSON")]).unwrap(),
            Protocol::HttpJson
        );
        assert_eq!(
            protocol(&[
                (PROTOCOL_ENV, "http/json"),
                (TRACES_PROTOCOL_ENV, "http/protobuf")
            ])
            .unwrap(),
            Protocol::HttpBinary
        );
        assert_eq!(
            protocol(&[(PROTOCOL_ENV, "grpc")]).unwrap_err().to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL: `grpc` is not supported: use `http/protobuf` or `http/json`"
        );
        let json = exporter.clone().protocol(Protocol::HttpJson);
        assert_eq!(
            json.resolved_protocol(&env(&[(PROTOCOL_ENV, "grpc")]))
                .unwrap(),
            Protocol::HttpJson
        );
    }

    #[test]
    fn bad_headers_are_named_without_their_values() {
        for (list, expected) in [
            ("a=1,secretvalue", "OTLP header 2 in OTEL_EXPORTER_OTLP_HEADERS: expected key=value"),
            ("=secretvalue", "OTLP header 1 in OTEL_EXPORTER_OTLP_HEADERS: the key is empty"),
            ("key=secret%zz", "OTLP header `key` in OTEL_EXPORTER_OTLP_HEADERS: its value has a bad percent-escape"),
            ("key=", "OTLP header `key` in OTEL_EXPORTER_OTLP_HEADERS: its value is empty"),
            ("bad key=secretvalue", "OTLP header `bad key` in OTEL_EXPORTER_OTLP_HEADERS: not a valid header name"),
            ("key=secret%0Avalue", "OTLP header `key` in OTEL_EXPORTER_OTLP_HEADERS: its value has characters a header cannot carry"),
        ] {
            let error = from_lookup(env(&[(ENDPOINT_ENV, "http://h"), (HEADERS_ENV, list)]))
                .unwrap()
                .unwrap_err()
                .to_string();
            assert_eq!(error, expected);
            assert!(!error.contains("secret"));
        }
        // The traces variable is the one the SDK reads when it is set.
        let error = from_lookup(env(&[
            (ENDPOINT_ENV, "http://h"),
            (HEADERS_ENV, "fine=1"),
            (TRACES_HEADERS_ENV, "broken"),
        ]))
        .unwrap()
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "OTLP header 1 in OTEL_EXPORTER_OTLP_TRACES_HEADERS: expected key=value"
        );
        let header = OtlpExporter::new("http://h")
            .unwrap()
            .header("x y", "secret");
        assert_eq!(
            header.unwrap_err().to_string(),
            "OTLP header `x y`: not a valid header name"
        );
    }

    #[test]
    fn percent_decoding_rejects_broken_escapes() {
        assert_eq!(percent_decode("a%20b%2Cc").as_deref(), Some("a b,c"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }
}
