//! Provider-test helpers: the shared loopback server (from `agenthelm-test-support`) with the
//! `/v1` base URL the providers expect, fast retries, and a short request.
#![allow(dead_code)]

use std::time::Duration;

pub use agenthelm_test_support::{Received, Reply};

/// The shared loopback server, with the provider tests' base URL (`.../v1`).
pub struct MockServer {
    pub base_url: String,
    server: agenthelm_test_support::MockServer,
}

impl MockServer {
    /// Serves `replies` in order; a request past the end gets a 599 naming the problem.
    pub async fn start(replies: Vec<Reply>) -> MockServer {
        let server = agenthelm_test_support::MockServer::start(replies);
        MockServer {
            base_url: format!("{}/v1", server.url()),
            server,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.server.received()
    }
}

/// Retries fast enough for tests: 5 ms, doubling, at most 20 ms.
pub fn fast_retries() -> agenthelm::RetryPolicy {
    agenthelm::RetryPolicy {
        initial: Duration::from_millis(5),
        multiplier: 2.0,
        max: Duration::from_millis(20),
        jitter: 0.5,
    }
}

/// A short conversation asking `text`.
pub fn ask(text: &str) -> agenthelm::lm::CompletionRequest {
    agenthelm::lm::CompletionRequest {
        messages: vec![
            agenthelm::lm::Message::system("be brief"),
            agenthelm::lm::Message::user(text),
        ],
        ..Default::default()
    }
}
