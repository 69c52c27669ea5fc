//! A short fingerprint of a [`CompletionRequest`], kept with each model call in the journal so
//! that a replay can tell whether the same question is asked again.

use std::fmt;

use super::CompletionRequest;

/// The fingerprint of a request: one hash of the conversation and settings, one of the tools
/// offered. Two halves, so a replay can say which of them changed (a prompt or a tool schema).
///
/// Written as 32 hex digits, the prompt's 16 then the tools' 16:
///
/// ```
/// use agenthelm::lm::{CompletionRequest, Message, RequestDigest};
///
/// let request = CompletionRequest { messages: vec![Message::user("hi")], ..Default::default() };
/// let digest = RequestDigest::of(&request);
/// assert_eq!(RequestDigest::parse(&digest.to_string()), Some(digest));
/// let other = CompletionRequest { messages: vec![Message::user("hello")], ..Default::default() };
/// assert_ne!(RequestDigest::of(&other).prompt, digest.prompt);
/// assert_eq!(RequestDigest::of(&other).tools, digest.tools);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestDigest {
    /// The messages, tool choice, response format, temperature and token limit.
    pub prompt: u64,
    /// The tool definitions (names, descriptions, parameter schemas), in order.
    pub tools: u64,
}

impl RequestDigest {
    /// The fingerprint of `request`. JSON objects serialize with sorted keys, so the same
    /// request always gives the same digest, on every platform and version.
    pub fn of(request: &CompletionRequest) -> Self {
        let prompt = (
            &request.messages,
            &request.tool_choice,
            &request.response_format,
            request.temperature,
            request.max_tokens,
        );
        RequestDigest {
            prompt: fnv1a(&serde_json::to_vec(&prompt).unwrap_or_default()),
            tools: fnv1a(&serde_json::to_vec(&request.tools).unwrap_or_default()),
        }
    }

    /// Reads a digest written by `to_string`; `None` for other text.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let (prompt, tools) = text.split_at(16);
        Some(RequestDigest {
            prompt: u64::from_str_radix(prompt, 16).ok()?,
            tools: u64::from_str_radix(tools, 16).ok()?,
        })
    }
}

impl fmt::Display for RequestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.prompt, self.tools)
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms, unlike std's hasher. Not a security
/// boundary: it only tells a changed request from the same one.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::{Message, ToolDefinition};
    use serde_json::json;

    fn request(schema: serde_json::Value) -> CompletionRequest {
        CompletionRequest {
            messages: vec![Message::system("be brief"), Message::user("hi")],
            tools: vec![ToolDefinition {
                name: "echo".into(),
                description: "Echoes".into(),
                parameters: schema,
            }],
            ..CompletionRequest::default()
        }
    }

    #[test]
    fn a_changed_schema_changes_only_the_tools_half() {
        let before = RequestDigest::of(&request(json!({"type": "object"})));
        let after = RequestDigest::of(&request(json!({"type": "object", "required": ["x"]})));
        assert_eq!(before.prompt, after.prompt);
        assert_ne!(before.tools, after.tools);
        assert_eq!(
            before,
            RequestDigest::of(&request(json!({"type": "object"})))
        );
    }

    #[test]
    fn other_text_is_not_a_digest() {
        assert_eq!(RequestDigest::parse("xyz"), None);
        assert_eq!(RequestDigest::parse(&"g".repeat(32)), None);
    }
}
