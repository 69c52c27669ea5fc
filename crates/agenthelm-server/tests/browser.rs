//! The web UI in headless Chromium, driven through WebDriver (Debian's `chromium` and
//! `chromium-driver`; `scripts/test` installs them). Without them the tests say why and pass.
//!
//! Screenshots of each stage are saved as PNG in the test's temp folder (kept when
//! `AGENTHELM_KEEP_SCREENSHOTS` names a folder to copy them to).

mod common;

use common::{start, TestServer, TOKEN};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a page may take to show what is expected.
const PATIENCE: Duration = Duration::from_secs(20);

/// Chromium behind chromedriver, on a free loopback port; both stop when dropped.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    base: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium runs in chromedriver's process group: a failed test leaves neither behind.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The browser, or `None` (and why, printed) when Chromium or its driver is missing.
async fn browser(server: &TestServer) -> Option<Browser> {
    let Some(chromium) = find_program(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"]) else {
        println!("skipped: no chromium (apt-get install chromium chromium-driver)");
        return None;
    };
    let Some(chromedriver) =
        find_program(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
    else {
        println!("skipped: no chromedriver (apt-get install chromium-driver)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let log = std::fs::File::create(server.dir.join("chromedriver.log")).expect("log file");
    let driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start chromedriver");
    let profile = server.dir.join("chromium-profile");
    let capabilities = json!({"goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", format!("--user-data-dir={}", profile.display())],
    }});
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let mut builder = ClientBuilder::rustls().expect("rustls");
    builder.capabilities(capabilities);
    let deadline = Instant::now() + PATIENCE;
    let client = loop {
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(client) => break client,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    };
    let shots = server.dir.join("screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    Some(Browser {
        client,
        driver,
        shots,
        base: server.url.clone(),
    })
}

impl Browser {
    async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("open the page");
    }

    /// Runs `script` (a function body) with `args` and returns what it returns.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.expect("script")
    }

    /// Waits until `condition` (a JavaScript expression) is true; fails with a screenshot.
    async fn wait(&self, what: &str, condition: &str) {
        let deadline = Instant::now() + PATIENCE;
        let script = format!("return !!({condition});");
        loop {
            if let Ok(Value::Bool(true)) = self.client.execute(&script, vec![]).await {
                return;
            }
            if Instant::now() > deadline {
                self.shot("timeout").await;
                let url = self.client.current_url().await.map(|u| u.to_string());
                panic!(
                    "timed out waiting for {what} ({condition}) on {url:?}; see {}",
                    self.shots.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        let found = self.client.find(Locator::Css(css)).await.expect(css);
        found.text().await.expect("text")
    }

    async fn click(&self, css: &str) {
        let found = self.client.find(Locator::Css(css)).await.expect(css);
        found.click().await.expect("click");
    }

    /// Sets the value of the field `css` as if typed.
    async fn fill(&self, css: &str, text: &str) {
        self.js(
            "const f = document.querySelector(arguments[0]); f.value = arguments[1]; \
             f.dispatchEvent(new Event('input', {bubbles: true}));",
            vec![json!(css), json!(text)],
        )
        .await;
    }

    async fn shot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("save the screenshot");
        if let Ok(keep) = std::env::var("AGENTHELM_KEEP_SCREENSHOTS") {
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(&path, Path::new(&keep).join(format!("{name}.png")));
        }
        path
    }

    async fn sign_in(&self) {
        self.open("/").await;
        self.wait("the sign-in form", "document.getElementById('token')")
            .await;
        self.shot("01-sign-in").await;
        let field = self
            .client
            .find(Locator::Id("token"))
            .await
            .expect("token field");
        field.send_keys(TOKEN).await.expect("type the token");
        self.click("#sign-in").await;
        self.wait("the runs page", "document.getElementById('filters')")
            .await;
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

const PLAN: &str = "goal: pay the <b>supplier</b>
steps:
  - id: first
    tool: note
    description: note <i>one</i>
  - id: wait
    tool: slow
    description: take a moment
    depends_on: [first]
  - id: pay
    tool: pay
    description: pay
    args: {amount: 5}
    depends_on: [wait]
";

/// Sign in, submit a plan, break a field and see the problem by its row, fix and approve,
/// watch the steps turn green live, approve the payment in the inbox with edited arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_plan_watch_it_run_and_approve_a_call_with_edited_arguments() {
    let server = start("ui-browser-review").await;
    let Some(browser) = browser(&server).await else {
        return;
    };
    let b = &browser;
    b.sign_in().await;

    b.open("/submit").await;
    b.fill("#submit-yaml", PLAN).await;
    b.click("#submit").await;
    b.wait("the plan review", "document.getElementById('review')")
        .await;
    assert_eq!(
        b.text("#goal").await,
        "pay the <b>supplier</b>",
        "markup is text"
    );
    let injected = b
        .js(
            "return document.querySelectorAll('#goal b, #review i').length;",
            vec![],
        )
        .await;
    assert_eq!(injected, json!(0));
    b.shot("02-review").await;

    // A dependency on nothing: approving is refused, and Check shows the problem by step 1's
    // row and under the editor.
    let broken = PLAN.replace("depends_on: [first]", "depends_on: [nosuch]");
    b.fill("#plan-yaml", &broken).await;
    b.click("#approve").await;
    b.wait(
        "approval refused",
        "document.getElementById('problems').textContent.includes('nosuch')",
    )
    .await;
    assert_eq!(b.text("#state").await, "awaiting approval");
    b.js(
        "document.getElementById('problems').replaceChildren(); \
         document.querySelectorAll('td.problem').forEach((c) => { c.textContent = ''; });",
        vec![],
    )
    .await;
    b.click("#check").await;
    b.wait(
        "the problem by its row",
        "document.querySelector('tr[data-index=\"1\"] td.problem').textContent.includes('nosuch')",
    )
    .await;
    assert!(b.text("#problems").await.contains("steps[1].depends_on"));
    assert_eq!(
        b.text("tr[data-index=\"0\"] td.problem").await,
        "",
        "only step 1 is wrong"
    );
    b.shot("03-problem").await;

    // Fixed (and the first step's description edited): it checks, then runs once approved.
    let fixed = PLAN.replace("note <i>one</i>", "note one, edited");
    b.fill("#plan-yaml", &fixed).await;
    b.click("#check").await;
    b.wait(
        "a clean check",
        "document.getElementById('review-status').textContent.includes('passes')",
    )
    .await;
    assert_eq!(b.text("#problems").await, "");
    b.click("#approve").await;
    b.wait(
        "the run page without review",
        "!document.getElementById('review') && document.querySelector('#steps tr')",
    )
    .await;
    b.js("window.stayed = true;", vec![]).await;
    b.wait("the slow step running", "document.querySelector('#graph g[data-step=\"wait\"]').classList.contains('status-running')").await;
    b.shot("04-running").await;
    b.wait("the slow step green, live", "window.stayed && document.querySelector('#graph g[data-step=\"wait\"]').classList.contains('status-completed')").await;
    let fill = b
        .js("return getComputedStyle(document.querySelector('#graph g[data-step=\"wait\"] rect')).stroke;", vec![])
        .await;
    assert_eq!(fill, json!("rgb(31, 157, 85)"), "completed steps are green");
    b.wait(
        "the payment waiting",
        "document.getElementById('state').textContent === 'waiting for approval'",
    )
    .await;
    assert!(b
        .text("#steps tr[data-step=\"first\"]")
        .await
        .contains("note one, edited"));
    let bars = b
        .js(
            "return document.querySelectorAll('#timeline .bar.status-completed:not([hidden])').length;",
            vec![],
        )
        .await;
    assert_eq!(bars, json!(2), "a green timeline bar for each step done");
    b.shot("05-waiting").await;

    // The inbox: arguments that do not fit the tool are refused by field, then fixed.
    b.open("/approvals").await;
    b.wait(
        "the payment in the inbox",
        "document.querySelector('article.call')",
    )
    .await;
    assert!(b.text("article.call").await.contains("pay"));
    b.fill("article.call textarea.args", "{\"amount\": \"lots\"}")
        .await;
    b.click("article.call button[data-action=\"edit\"]").await;
    b.wait(
        "the argument problem",
        "document.querySelector('article.call ul.problems').textContent.includes('args.amount')",
    )
    .await;
    b.shot("06-inbox-problem").await;
    b.fill("article.call textarea.args", "{\"amount\": 7}")
        .await;
    b.fill("article.call input.reason", "seven, not five").await;
    b.click("article.call button[data-action=\"edit\"]").await;
    b.wait("the inbox empty", "document.getElementById('inbox-empty')")
        .await;

    let run_id = run_of(&server).await;
    b.open(&format!("/runs/{run_id}")).await;
    b.wait(
        "the run succeeded",
        "document.getElementById('state').textContent === 'succeeded'",
    )
    .await;
    let approvals = b.text("#approvals").await;
    for part in ["pay", "edit", "alice", "seven, not five", "\"amount\": 7"] {
        assert!(approvals.contains(part), "{part} in {approvals}");
    }
    assert!(b.text("#facts").await.contains("approved by"));
    b.shot("07-succeeded").await;
    let paid = std::fs::read_to_string(server.dir.join("paid.log")).expect("paid.log");
    assert_eq!(
        paid.trim(),
        "{\"amount\":7}",
        "the edited arguments were paid"
    );
    browser.close().await;
}

/// A failing plan with markup in its output: the rollback is shown, the markup is text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plan_shows_its_rollback_and_markup_as_text() {
    let server = start("ui-browser-rollback").await;
    let Some(browser) = browser(&server).await else {
        return;
    };
    let b = &browser;
    b.sign_in().await;
    b.open("/submit").await;
    let plan = "goal: make then fail
steps:
  - id: made
    tool: make
    description: \"<img src=x onerror=\\\"window.pwned=2\\\">\"
  - id: shown
    tool: markup
    depends_on: [made]
  - id: boom
    tool: fail
    depends_on: [shown]
";
    b.fill("#submit-yaml", plan).await;
    b.click("#submit-approve").await;
    b.click("#submit").await;
    b.wait("the run failed", "document.getElementById('state') && document.getElementById('state').textContent === 'failed'").await;
    b.wait("the rollback", "!document.getElementById('rollback-box').hidden && document.getElementById('rollback').textContent.includes('done')").await;
    let rollback = b.text("#rollback").await;
    assert!(
        rollback.contains("undo made with unmake: done"),
        "{rollback}"
    );
    assert!(b
        .text("#steps tr[data-step=\"boom\"]")
        .await
        .contains("boom"));
    assert!(b
        .text("#steps tr[data-step=\"made\"]")
        .await
        .contains("compensated"));
    assert!(b
        .text("#steps tr[data-step=\"made\"]")
        .await
        .contains("<img src=x"));
    assert!(b
        .text("#steps tr[data-step=\"shown\"]")
        .await
        .contains("<script>window.pwned = 1</script><b>bold</b>"));
    let injected = b
        .js("return [window.pwned === undefined, document.querySelectorAll('#steps img, #steps script, #steps b').length];", vec![])
        .await;
    assert_eq!(
        injected,
        json!([true, 0]),
        "nothing from the run was run or drawn"
    );
    b.js("document.getElementById('steps').scrollIntoView();", vec![])
        .await;
    b.shot("08-rollback").await;
    // A plan rejected with a reason: nothing runs, and who rejected it is shown.
    b.open("/submit").await;
    b.fill(
        "#submit-yaml",
        "goal: never mind\nsteps:\n  - id: a\n    tool: note\n",
    )
    .await;
    b.click("#submit").await;
    b.wait("the plan review", "document.getElementById('review')")
        .await;
    b.fill("#reason", "not today").await;
    b.click("#reject").await;
    b.wait("the plan rejected", "!document.getElementById('review') && document.getElementById('state').textContent === 'rejected'").await;
    let facts = b.text("#facts").await;
    assert!(
        facts.contains("Plan rejected by") && facts.contains("alice"),
        "{facts}"
    );
    assert!(facts.contains("not today"), "{facts}");
    b.open("/").await;
    b.wait(
        "both runs in the list",
        "document.querySelectorAll('#runs tr[data-run]').length === 2",
    )
    .await;
    b.shot("09-runs").await;
    b.open("/?state=failed").await;
    b.wait(
        "the failed run in the list",
        "document.querySelector('#runs tr[data-run]')",
    )
    .await;
    assert!(b.text("#runs").await.contains("make then fail"));
    b.open("/?state=succeeded").await;
    b.wait("an empty list", "document.querySelector('p.empty')")
        .await;
    b.shot("10-filtered").await;
    browser.close().await;
}

/// The id of the one run the server has.
async fn run_of(server: &TestServer) -> String {
    let runs: Value = reqwest::Client::new()
        .get(format!("{}/api/runs", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    runs[0]["run_id"].as_str().expect("a run").to_owned()
}
