use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One scripted HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
    /// Announce this Content-Length but send only `body` (a truncated answer).
    declared_len: Option<usize>,
    /// Read the request and never answer.
    silent: bool,
    /// Send the body's first bytes, then wait for the gate before the rest.
    hold: Option<(usize, Gate)>,
}

/// A gate a held reply waits at ([`Reply::hold_after`]) until the test opens it.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets whatever waits at the gate go on.
    pub fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().expect("lock") = true;
        changed.notify_all();
    }

    /// Waits until the gate is open, at most `limit`; `true` when it opened.
    pub fn wait(&self, limit: Duration) -> bool {
        let (open, changed) = &*self.0;
        let guard = open.lock().expect("lock");
        let (guard, _) = changed
            .wait_timeout_while(guard, limit, |open| !*open)
            .expect("lock");
        *guard
    }
}

impl Reply {
    /// A JSON body with `content-type: application/json`.
    pub fn json(status: u16, body: Value) -> Self {
        Reply::raw(status, body.to_string()).header("content-type", "application/json")
    }

    /// Any body, as it is.
    pub fn raw(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into().into_bytes(),
            delay: Duration::ZERO,
            declared_len: None,
            silent: false,
            hold: None,
        }
    }

    /// Reads the request and never answers (until the server is dropped).
    pub fn silence() -> Self {
        Reply {
            silent: true,
            ..Reply::raw(0, "")
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sends the first `len` bytes of the body, then waits until `gate` is opened (at most 30
    /// s) before it sends the rest: for answers streamed in parts.
    pub fn hold_after(mut self, len: usize, gate: Gate) -> Self {
        self.hold = Some((len, gate));
        self
    }

    /// Claims a body of `len` bytes, sends what it has, then hangs up.
    pub fn truncated_to_claim(mut self, len: usize) -> Self {
        self.declared_len = Some(len);
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The protocol of the request line, e.g. `HTTP/1.1`.
    pub version: String,
    /// Headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body, as sent.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

enum Script {
    /// In order; a request past the end gets the second reply.
    Sequence(std::vec::IntoIter<Reply>, Reply),
    /// The same answer to every request.
    Always(Reply),
    /// An answer made from each request.
    Respond(Box<dyn Fn(&Received) -> Reply + Send>),
}

struct Shared {
    script: Mutex<Script>,
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    closed: AtomicBool,
}

/// A loopback HTTP/1.1 server (127.0.0.1, a free port) answering each request from a script and
/// recording what it received. Each connection carries one exchange and is then closed, so every
/// answer, broken ones included, is exactly what the script says. Stops when dropped.
pub struct MockServer {
    url: String,
    shared: Arc<Shared>,
}

impl MockServer {
    /// Answers with `replies` in order; a request past the end gets a 599 naming the problem.
    pub fn start(replies: Vec<Reply>) -> MockServer {
        let ran_out = Reply::json(
            599,
            serde_json::json!({"error": {"message": "the test server has no reply left"}}),
        );
        Self::start_then(replies, ran_out)
    }

    /// Answers with `replies` in order, then every further request with `ran_out`.
    pub fn start_then(replies: Vec<Reply>, ran_out: Reply) -> MockServer {
        Self::serve(Script::Sequence(replies.into_iter(), ran_out))
    }

    /// Answers every request with `reply`.
    pub fn always(reply: Reply) -> MockServer {
        Self::serve(Script::Always(reply))
    }

    /// Answers each request with what `respond` makes of it (for answers that depend on the
    /// request, such as a model's to concurrent conversations).
    pub fn responding(respond: impl Fn(&Received) -> Reply + Send + 'static) -> MockServer {
        Self::serve(Script::Respond(Box::new(respond)))
    }

    fn serve(script: Script) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            received: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            closed: AtomicBool::new(false),
        });
        let server = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if server.closed.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let server = Arc::clone(&server);
                std::thread::spawn(move || {
                    let _ = exchange(stream, &server);
                });
            }
        });
        MockServer { url, shared }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Waits (up to `limit`) until `count` requests arrived, and returns all received.
    pub fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        let mut received = self.shared.received.lock().expect("lock");
        while received.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            received = self
                .shared
                .arrived
                .wait_timeout(received, left)
                .expect("lock")
                .0;
        }
        received.clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn exchange(mut stream: TcpStream, server: &Shared) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream)? else {
        return Ok(());
    };
    let reply = match &mut *server.script.lock().expect("lock") {
        Script::Sequence(replies, ran_out) => replies.next().unwrap_or_else(|| ran_out.clone()),
        Script::Always(reply) => reply.clone(),
        Script::Respond(respond) => respond(&request),
    };
    server.received.lock().expect("lock").push(request);
    server.arrived.notify_all();
    if reply.silent {
        while !server.closed.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
        return Ok(());
    }
    std::thread::sleep(reply.delay);
    let mut head = format!(
        "HTTP/1.1 {} Scripted\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.declared_len.unwrap_or(reply.body.len())
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    match &reply.hold {
        Some((len, gate)) => {
            let (first, rest) = reply.body.split_at((*len).min(reply.body.len()));
            stream.write_all(first)?;
            stream.flush()?;
            gate.wait(Duration::from_secs(30));
            stream.write_all(rest)?;
        }
        None => stream.write_all(&reply.body)?,
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Received>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let version = request_line.next().unwrap_or_default().to_owned();
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
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Received {
        method,
        path,
        version,
        headers,
        body: buffer[header_end..].to_vec(),
        at: Instant::now(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(url: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
        write!(
            stream,
            "POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn answers_in_order_records_requests_and_says_when_the_script_ran_out() {
        let server = MockServer::start(vec![
            Reply::json(200, serde_json::json!({"n": 1})).header("x-a", "b"),
            Reply::raw(503, "busy"),
        ]);
        let first = post(server.url(), r#"{"q":1}"#);
        assert!(first.starts_with("HTTP/1.1 200") && first.contains("x-a: b"));
        assert!(first.ends_with(r#"{"n":1}"#));
        assert!(post(server.url(), "").starts_with("HTTP/1.1 503"));
        assert!(post(server.url(), "").contains("no reply left"));
        let received = server.wait_for(3, Duration::from_secs(5));
        assert_eq!(received.len(), 3);
        assert_eq!(received[0].method, "POST");
        assert_eq!(received[0].path, "/v1/x");
        assert_eq!(received[0].version, "HTTP/1.1");
        assert_eq!(received[0].json()["q"], 1);
        assert_eq!(received[0].header("Content-Length"), Some("7"));
    }

    #[test]
    fn past_the_script_every_request_gets_the_chosen_reply() {
        let server =
            MockServer::start_then(vec![Reply::raw(200, "first")], Reply::raw(500, "exhausted"));
        assert!(post(server.url(), "").ends_with("first"));
        for _ in 0..2 {
            let answer = post(server.url(), "");
            assert!(answer.starts_with("HTTP/1.1 500") && answer.ends_with("exhausted"));
        }
        assert_eq!(server.received().len(), 3);
    }

    #[test]
    fn a_truncated_reply_claims_more_than_it_sends() {
        let server = MockServer::always(Reply::raw(200, "abc").truncated_to_claim(10));
        let answer = post(server.url(), "");
        assert!(answer.contains("content-length: 10") && answer.ends_with("abc"));
    }
}
