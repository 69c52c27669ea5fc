//! OpenTelemetry: after a plan run ends, its spans (run, steps, tool calls, LLM calls with
//! tokens, compensations) go to an OTLP/HTTP collector named by `--otlp-endpoint` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`.
//!
//! The spans are built from the run's journal, so a resumed run is exported whole (events from
//! before the restart included). A collector that cannot be reached is a warning: the run's
//! outcome and exit code stay what they were.

use agenthelm::otlp::OtlpExporter;
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
    let source = if flag.is_some() {
        "--otlp-endpoint"
    } else {
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    };
    built
        .transpose()
        .map_err(|e| BadInput(format!("{source}: {e}")).into())
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
