//! One model call made on an agent's behalf: timed, priced, added to the result's totals and
//! recorded as an [`EventKind::LlmCall`] event, with an [`EventKind::RateLimitWait`] before it
//! for each wait for a rate limit.

use std::time::Instant;
use tracing::Instrument;

use super::{AgentResult, StepContext};
use crate::lm::{Completion, CompletionRequest, Lm, LmError, RateWait, RequestDigest, StreamDelta};
use crate::trace::{span_count, EventKind, ModelExchange, Usage};

/// Sends `request` to `lm` (unless the context's budget refuses it: then nothing is sent or
/// recorded, and the error names the limit), adds the call's tokens and cost (or one unpriced
/// call, counted as [`Usage`] counts it everywhere) to `result`, and emits an `LlmCall` event
/// with model, tokens, cost, latency, the request's digest and the answer to `ctx` (and, as
/// they begin, the call's waits for a rate limit).
///
/// When `ctx` has text observers, the model streams its answer and they see its text as it is
/// written; the event is the same either way (the final answer and usage, not the pieces).
///
/// When `ctx` replays a recorded run, the answer comes from its journal and `lm` is not called
/// (unless the replay calls models for real).
pub(crate) async fn ask_model(
    lm: &Lm,
    request: &CompletionRequest,
    ctx: &StepContext,
    result: &mut AgentResult,
) -> Result<Completion, LmError> {
    let reservation = ctx.budget().map(|b| b.admit(lm, request)).transpose()?;
    let digest = digest_of(request, ctx);
    let span = model_span(lm);
    let started = Instant::now();
    let mut text = ctx.streams_text().then(|| ctx.text_forwarder());
    let outcome = match ctx.replayed_answer(&digest) {
        Some(recorded) => {
            // A replayed answer is shown whole, as a model that does not stream shows it.
            if let (Some(text), Ok(answer)) = (&mut text, &recorded) {
                text.push(answer.text.as_deref().unwrap_or_default());
            }
            recorded
        }
        None => {
            let emit = ctx.emitter();
            let model_id = lm.model_id().to_owned();
            let on_wait = move |wait: &RateWait| {
                emit(EventKind::RateLimitWait {
                    model: model_id.clone(),
                    limit: wait.cause,
                    wait_ms: wait.wait.as_secs_f64() * 1e3,
                })
            };
            match &mut text {
                Some(text) => {
                    let mut on_delta = |delta: StreamDelta| {
                        if let StreamDelta::Text(piece) = delta {
                            text.push(&piece);
                        }
                    };
                    lm.stream_observed(request, &mut on_delta, on_wait)
                        .instrument(span.clone())
                        .await
                }
                None => {
                    lm.complete_observed(request, on_wait)
                        .instrument(span.clone())
                        .await
                }
            }
        }
    };
    // What was held back for redaction is shown before the call's event.
    if let Some(text) = &mut text {
        text.finish();
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let (usage, cost_usd, tool_calls, model) = match &outcome {
        Ok(c) => (c.usage, c.cost_usd, c.tool_calls.len(), c.model.clone()),
        Err(_) => (Default::default(), None, 0, String::new()),
    };
    if let Some(reservation) = reservation {
        reservation.settle(usage, cost_usd);
    }
    record_on_span(&span, &outcome);
    let mut call = Usage::default();
    call.add_call(usage, cost_usd, outcome.is_err());
    result.add_priced(&call);
    let exchange = ModelExchange {
        request_digest: digest.to_string(),
        text: outcome.as_ref().ok().and_then(|c| c.text.clone()),
        tool_calls: outcome
            .as_ref()
            .map(|c| c.tool_calls.clone())
            .unwrap_or_default(),
    };
    ctx.emit(EventKind::LlmCall {
        model: if model.is_empty() {
            lm.model_id().to_owned()
        } else {
            model
        },
        usage,
        cost_usd,
        latency_ms,
        tool_calls,
        error: outcome.as_ref().err().map(ToString::to_string),
        exchange: Some(exchange),
    });
    outcome
}

/// The digest of `request` as the journal may show it: redacted when the run redacts, so that
/// no digest is taken of a secret, and a replay (which rebuilds requests from the redacted
/// journal) finds the recorded answer.
fn digest_of(request: &CompletionRequest, ctx: &StepContext) -> RequestDigest {
    let Some(redactor) = ctx.sink().redactor() else {
        return RequestDigest::of(request);
    };
    let Ok(mut shown) = serde_json::to_value(request) else {
        return RequestDigest::of(request);
    };
    if !redactor.redact_value(&mut shown) {
        return RequestDigest::of(request);
    }
    match serde_json::from_value::<CompletionRequest>(shown) {
        Ok(shown) => RequestDigest::of(&shown),
        Err(_) => RequestDigest::of(request),
    }
}

/// The span of one model call, with OpenTelemetry GenAI names (`chat <model>`); never the
/// prompt or the answer.
fn model_span(lm: &Lm) -> tracing::Span {
    let model = lm.model_id();
    let (provider, name) = model.split_once('/').unwrap_or(("", model));
    tracing::info_span!(
        "chat",
        otel.name = %format_args!("chat {model}"),
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider,
        gen_ai.request.model = name,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        agenthelm.cost_usd = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// What the call used and cost, or what kind of error it ended with.
fn record_on_span(span: &tracing::Span, outcome: &Result<Completion, LmError>) {
    match outcome {
        Ok(completion) => {
            span.record("gen_ai.response.model", completion.model.as_str());
            span.record(
                "gen_ai.usage.input_tokens",
                span_count(completion.usage.input_tokens),
            );
            span.record(
                "gen_ai.usage.output_tokens",
                span_count(completion.usage.output_tokens),
            );
            if let Some(cost) = completion.cost_usd {
                span.record("agenthelm.cost_usd", cost);
            }
        }
        Err(error) => {
            span.record("error.type", error.kind());
            span.record("otel.status_code", "ERROR");
        }
    }
}
