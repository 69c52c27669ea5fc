//! Live export: the library's `tracing` spans, as they end, to an OTLP collector, for
//! long-lived processes (`agenthelm serve`) whose runs should show up while they go on.

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Handle;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::export::{masked_url, resource, OtlpError, OtlpExporter};
use super::transport::Transport;

/// The SDK's tracer provider with a batch processor sending to one collector, and the
/// `tracing` layer that feeds it.
///
/// The spans are the library's (run `invoke_workflow agenthelm` → step → `chat <model>` /
/// `execute_tool <tool>`, `rollback`), with their GenAI attributes, batched and sent in the
/// background. Requests go through the workspace's reqwest on the Tokio runtime the export was
/// made in. Call [`shutdown`](Self::shutdown) before the process ends, or the last spans are
/// lost.
///
/// ```no_run
/// use agenthelm::otlp::LiveExport;
/// use tracing_subscriber::prelude::*;
/// # async fn demo() -> Result<(), agenthelm::otlp::OtlpError> {
/// let live = LiveExport::from_env().transpose()?; // OTEL_EXPORTER_OTLP_ENDPOINT...
/// tracing_subscriber::registry()
///     .with(live.as_ref().map(LiveExport::layer))
///     .init();
/// // ... serve ...
/// if let Some(live) = live {
///     live.shutdown().await?;
/// }
/// # Ok(()) }
/// ```
pub struct LiveExport {
    provider: SdkTracerProvider,
    url: String,
}

impl fmt::Debug for LiveExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveExport")
            .field("url", &self.url)
            .finish()
    }
}

impl LiveExport {
    /// Live export to the collector the environment names (as [`OtlpExporter::from_env`]),
    /// or `None` when it names none. Must be called within a Tokio runtime.
    pub fn from_env() -> Option<Result<LiveExport, OtlpError>> {
        OtlpExporter::from_env().map(|exporter| LiveExport::new(&exporter?))
    }

    /// Live export to `exporter`'s collector, with its headers, timeout and protocol. Must be
    /// called within a Tokio runtime, which then carries the requests.
    pub fn new(exporter: &OtlpExporter) -> Result<LiveExport, OtlpError> {
        let runtime = Handle::try_current().map_err(|_| OtlpError::Setup {
            url: exporter.traces_url().to_owned(),
            message: "live export needs a Tokio runtime".to_owned(),
        })?;
        let timeout = exporter.resolved_timeout(&|name| std::env::var(name).ok())?;
        let transport = Transport::new(exporter.client().clone(), timeout).live(runtime);
        let sdk = exporter.sdk_exporter(transport, timeout)?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(sdk)
            .with_resource(resource())
            .build();
        Ok(LiveExport {
            provider,
            url: masked_url(exporter.traces_url()),
        })
    }

    /// A `tracing` layer turning the spans of AgentHelm's crates (targets `agenthelm*`, level
    /// INFO and up) into OpenTelemetry spans for this export. Other crates' spans are left out.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("agenthelm");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("agenthelm", Level::INFO))
    }

    /// Where spans are sent (a password in it masked).
    pub fn traces_url(&self) -> &str {
        &self.url
    }

    /// Sends the spans still waiting and stops the export. Waits for the last request (at most
    /// about the exporter's timeout).
    pub async fn shutdown(self) -> Result<(), OtlpError> {
        let url = self.url.clone();
        let provider = self.provider;
        // The provider blocks until its processor thread has sent the last batch, which it
        // does on this runtime: wait on a blocking thread, not on a runtime worker.
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        let message = match done {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        Err(OtlpError::Unreachable { url, message })
    }
}
