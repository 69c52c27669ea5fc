//! OpenTelemetry: after a plan run ends, its spans (run, steps, tool calls, LLM calls with
//! tokens, compensations) go to an OTLP/HTTP collector named by `--otlp-endpoint` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`; `serve` exports its live `tracing` spans there as they end.
//!
//! The spans of a run are built from its journal, so a resumed run is exported whole (events
//! from before the restart included). A collector that cannot be reached is a warning: the
//! run's outcome and exit code stay what they were.

use agenthelm::otlp::{LiveExport, OtlpError, OtlpExporter, ENDPOINT_ENV, TRACES_ENDPOINT_ENV};
use agenthelm::store::RunStore;

use crate::exit::BadInput;
use crate::render::Palette;

/// The exporter for `--otlp-endpoint` (else `OTEL_EXPORTER_OTLP_ENDPOINT`), or `None` when
/// neither is set. A malformed endpoint is bad input, reported before anything runs.
pub fn exporter(flag: Option<&str>) -> anyhow::Result<Option<OtlpExporter>> {
    let built = match flag {
        Some(endpoint) => Some(OtlpExporter::new(endpoint)),
        None => OtlpExporter::from_env(),
    };
    built.transpose().map_err(|e| match flag {
        Some(_) => BadInput(format!("--otlp-endpoint: {e}")).into(),
        None => from_env(e),
    })
}

/// An error in the OTLP settings of the environment, naming the variable.
fn from_env(error: OtlpError) -> anyhow::Error {
    let message = match &error {
        // The other errors name their variable themselves.
        OtlpError::InvalidEndpoint { .. } => {
            let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
            let variable = if set(TRACES_ENDPOINT_ENV) {
                TRACES_ENDPOINT_ENV
            } else {
                ENDPOINT_ENV
            };
            format!("{variable}: {error}")
        }
        _ => error.to_string(),
    };
    BadInput(message).into()
}

/// Live export of the library's spans, when the environment names a collector. Call within
/// the runtime that will carry the requests.
pub fn live_export() -> anyhow::Result<Option<LiveExport>> {
    LiveExport::from_env().transpose().map_err(from_env)
}

/// Sends the live spans still waiting; a failure is a warning.
pub async fn finish_live(live: LiveExport) {
    let url = live.traces_url().to_owned();
    if let Err(e) = live.shutdown().await {
        let palette = Palette::stderr();
        crate::out::note(&palette.warn(&format!(
            "warning: the last spans were not exported to {url}: {e}"
        )));
    }
}

/// Sends the spans of run `run_id` (as its journal holds them); says on standard error how it
/// went.
pub async fn export(exporter: &OtlpExporter, store: &dyn RunStore, run_id: &str) {
    let palette = Palette::stderr();
    let events = match store.load_run(run_id) {
        Ok(stored) => stored.events,
        Err(e) => {
            crate::out::note(&palette.warn(&format!("warning: spans not exported: {e}")));
            return;
        }
    };
    match exporter.export(&events).await {
        Ok(spans) => crate::out::note(&palette.dim(&format!(
            "Exported {spans} spans to {}",
            exporter.traces_url()
        ))),
        Err(e) => crate::out::note(&palette.warn(&format!("warning: spans not exported: {e}"))),
    }
}
