//! Deterministic trace and span ids, and event times as span times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceId};

/// The trace id of run `run_id`, always the same for the same run (32 hex digits when shown).
///
/// ```
/// use agenthelm::otlp::trace_id_of;
/// assert_eq!(trace_id_of("run-1"), trace_id_of("run-1"));
/// assert_ne!(trace_id_of("run-1"), trace_id_of("run-2"));
/// assert_eq!(trace_id_of("run-1").to_string().len(), 32);
/// ```
pub fn trace_id_of(run_id: &str) -> TraceId {
    // FNV-1a, 128 bits: stable across versions and platforms, unlike std's hasher. Not a
    // security boundary, only a stable name.
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for byte in "agenthelm-run:".bytes().chain(run_id.bytes()) {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    TraceId::from(hash.max(1))
}

/// The id of the span playing role `key` in trace `trace_id`.
pub(super) fn span_id_of(trace_id: TraceId, key: &str) -> SpanId {
    // FNV-1a, 64 bits, over the trace's hex form and the span's role in it (the ids the
    // hand-written exporter gave, so traces already sent keep theirs).
    let mut hash: u64 = 0xcbf29ce484222325;
    let trace = trace_id.to_string();
    for byte in trace.bytes().chain([b'/']).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    SpanId::from(hash.max(1))
}

/// The instant `ms` milliseconds after the Unix epoch.
pub(super) fn at(ms: u64) -> SystemTime {
    // Far past what a clock can show only in corrupt journals: such a time is read as the epoch.
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// Start of something that ended at `end_ms` after `duration_ms`.
pub(super) fn before(end_ms: u64, duration_ms: f64) -> SystemTime {
    let duration = if duration_ms.is_finite() && duration_ms > 0.0 {
        Duration::try_from_secs_f64(duration_ms / 1e3).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    };
    at(end_ms).checked_sub(duration).unwrap_or(UNIX_EPOCH)
}
