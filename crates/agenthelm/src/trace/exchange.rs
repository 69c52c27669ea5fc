use serde::{Deserialize, Serialize};

use crate::lm::ToolCall;

/// What a model was asked (as a [`RequestDigest`](crate::lm::RequestDigest)) and what it
/// answered: kept with each [`LlmCall`](super::EventKind::LlmCall) event so that a replay can
/// give the same answer without calling the model, and tell when the question changed.
///
/// Only the answer is kept, not the request (the conversation so far would repeat in every
/// call of a step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelExchange {
    /// The request's digest, as [`RequestDigest`](crate::lm::RequestDigest) writes it.
    pub request_digest: String,
    /// The answer's text, if it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The tool calls the answer asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}
