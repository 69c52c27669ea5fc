//! A loopback HTTP server for provider tests: it answers each request with the next scripted
//! reply and records what it received. It binds 127.0.0.1 only and closes each connection after
//! one exchange, so every reply (including broken ones) is exactly what the script says.
#![allow(dead_code)]

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One scripted HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
    /// Announce this Content-Length but send only `body` (a truncated answer).
    declared_len: Option<usize>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Reply::raw(status, body.to_string()).header("content-type", "application/json")
    }

    pub fn raw(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into().into_bytes(),
            delay: Duration::ZERO,
            declared_len: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Claims a body of `len` bytes, sends what it has, then hangs up.
    pub fn truncated_to_claim(mut self, len: usize) -> Self {
        self.declared_len = Some(len);
        self
    }
}

/// What the server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub raw_body: String,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.raw_body).expect("request body is JSON")
    }
}

pub struct MockServer {
    pub base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl MockServer {
    /// Serves `replies` in order; a request past the end gets a 599 naming the problem.
    pub async fn start(replies: Vec<Reply>) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(replies.into_iter()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                let replies = Arc::clone(&replies);
                tokio::spawn(async move {
                    let _ = serve(stream, log, replies).await;
                });
            }
        });
        MockServer {
            base_url: format!("http://{addr}/v1"),
            received,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

type Replies = Arc<Mutex<std::vec::IntoIter<Reply>>>;

async fn serve(
    mut stream: TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    replies: Replies,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let raw_body = String::from_utf8_lossy(&buffer[header_end..]).to_string();
    log.lock().unwrap().push(Received {
        method,
        path,
        headers,
        raw_body,
        at: Instant::now(),
    });
    let reply = replies.lock().unwrap().next().unwrap_or_else(|| {
        Reply::json(
            599,
            serde_json::json!({"error": {"message": "the test server has no reply left"}}),
        )
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.declared_len.unwrap_or(reply.body.len())
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&reply.body).await?;
    stream.flush().await?;
    stream.shutdown().await
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
