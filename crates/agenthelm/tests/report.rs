//! The HTML picture of a run: rendered from a real run kept in a store, checked for its
//! structure, then opened in a real headless browser (Debian's `chromium`), which must load it
//! without a single request or console error and take a screenshot of it.

mod run_fixture;

use agenthelm::report::render_html;
use agenthelm_test_support::TempDir;
use run_fixture::{trip_run, PAYMENT_ERROR};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `data-status` of the element of kind `tag` (`g` for graph nodes, `tr` for table rows)
/// that carries `data-step="{step}"`.
fn status_of(html: &str, tag: &str, step: &str) -> Option<String> {
    let marker = format!(r#"<{tag} "#);
    html.split(&marker)
        .skip(1)
        .find(|chunk| chunk.contains(&format!(r#"data-step="{step}""#)))
        .and_then(|chunk| {
            let rest = chunk.split(r#"data-status=""#).nth(1)?;
            Some(rest.split('"').next()?.to_owned())
        })
}

#[tokio::test]
async fn a_run_with_rollback_shows_every_step_with_its_final_status() {
    let dir = TempDir::new("report-rollback");
    let run = trip_run(&dir, true).await;
    let html = render_html(&run);

    let expected = [
        ("find_flight", "completed"), // no compensating tool: nothing to undo
        ("find_hotel", "completed"),
        ("book_flight", "compensated"),
        ("book_hotel", "compensated"),
        ("pay", "failed"),
        ("confirm", "skipped"),
    ];
    for (step, status) in expected {
        assert_eq!(
            status_of(&html, "g", step).as_deref(),
            Some(status),
            "graph node {step}"
        );
        assert_eq!(
            status_of(&html, "tr", step).as_deref(),
            Some(status),
            "table row {step}"
        );
    }
    assert!(html.contains(r#"id="run-status" style="background:#d64541">failed<"#));
    // The hostile error and goal are escaped, never markup.
    assert!(!html.contains(PAYMENT_ERROR));
    assert!(html.contains("card &lt;declined&gt; &amp; &quot;blocked&quot; by &#39;bank&#39;"));
    assert!(html.contains("Book a trip to Lisbon &lt;3 &amp; &quot;enjoy&quot;"));
    // Tokens and cost of the two scripted LLM calls.
    assert!(html.contains("930 / 30"), "tokens in / out");
    assert!(html.contains("$0.000450"));
    // The timeline has bars of each kind, and the rollback says both bookings were undone.
    for class in ["bar step", "bar llm", "bar tool", "bar compensation"] {
        assert!(html.contains(class), "timeline lacks {class}");
    }
    assert!(
        html.contains("All 2 compensating action(s) succeeded; undone: book_hotel, book_flight.")
            || html.contains(
                "All 2 compensating action(s) succeeded; undone: book_flight, book_hotel."
            )
    );
    assert!(html.contains("Completed and kept, with nothing to undo: find_flight, find_hotel"));
    assert!(
        html.contains("Undo order: book_hotel → book_flight")
            || html.contains("Undo order: book_flight → book_hotel")
    );
    // Self-contained: no script, no link, no reference to anything outside the page.
    assert!(!html.contains("<script"));
    assert!(!html.contains("<link"));
    assert!(!html.contains(" src="));
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count() + 1,
        "only SVG namespaces and the CSP meta tag"
    );
}

#[tokio::test]
async fn a_successful_run_has_no_rollback() {
    let dir = TempDir::new("report-success");
    let run = trip_run(&dir, false).await;
    let html = render_html(&run);
    for step in [
        "find_flight",
        "find_hotel",
        "book_flight",
        "book_hotel",
        "pay",
        "confirm",
    ] {
        assert_eq!(
            status_of(&html, "g", step).as_deref(),
            Some("completed"),
            "{step}"
        );
    }
    assert!(html.contains(">succeeded<"));
    assert!(html.contains(r#"id="rollback-none""#));
    assert!(!html.contains("bar compensation"));
}

// ---- the real browser ----

const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs chromium on `page` with `extra` arguments (and a fresh profile), killed after 120 s.
fn run_chromium(
    chromium: &Path,
    page: &Path,
    profile: &Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--enable-logging=stderr", "--v=0"])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("start chromium")
}

/// What the page itself made chromium log: console messages (the page has no script, so any
/// is a problem) and requests its Content-Security-Policy refused (it allows none). Chromium's
/// own noise (D-Bus, GPU) is not the page's.
fn page_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.contains(":CONSOLE")
                || l.contains("Content Security Policy")
                || l.contains("Refused to")
                || l.contains("Uncaught")
        })
        .collect()
}

#[tokio::test]
async fn the_page_renders_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        // scripts/test installs Debian's chromium; only a machine without apt gets here.
        eprintln!("SKIPPED: chromium is not installed (scripts/test installs it with apt-get where apt is usable)");
        return;
    };
    let dir = TempDir::new("report-browser");
    let run = trip_run(&dir.join("store"), true).await;
    let page = dir.join("run.html");
    std::fs::write(&page, render_html(&run)).unwrap();

    // The DOM chromium built: the page parsed into the expected parts, and nothing it tried to
    // load was refused (the page's CSP forbids every request, so any attempt would show).
    let dom = run_chromium(&chromium, &page, &dir.join("profile-dom"), &["--dump-dom"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium --dump-dom failed: {log}");
    assert!(
        dom_text.contains(r#"<svg id="graph""#),
        "no graph in the DOM"
    );
    assert!(
        dom_text.contains(r#"<svg id="timeline""#),
        "no timeline in the DOM"
    );
    assert_eq!(
        dom_text.matches("<tr data-step=").count(),
        6 + 2,
        "6 steps, 2 compensations"
    );
    assert!(
        dom_text.contains("card &lt;declined&gt;"),
        "the error stays text in the DOM"
    );
    assert_eq!(
        page_errors(&log),
        Vec::<&str>::new(),
        "chromium reported errors"
    );

    // The check above does catch a page that reaches out or runs code.
    let bad = dir.join("bad.html");
    std::fs::write(
        &bad,
        r#"<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'none'"></head><body><img src="http://127.0.0.1:9/x.png"><script>nothing()</script></body></html>"#,
    )
    .unwrap();
    let bad_run = run_chromium(&chromium, &bad, &dir.join("profile-bad"), &["--dump-dom"]);
    let bad_log = String::from_utf8_lossy(&bad_run.stderr);
    assert!(
        page_errors(&bad_log).len() >= 2,
        "a refused image and script: {bad_log}"
    );

    let png = dir.join("run.png");
    let shot = run_chromium(
        &chromium,
        &page,
        &dir.join("profile-shot"),
        &[
            "--window-size=1360,1500",
            "--hide-scrollbars",
            &format!("--screenshot={}", png.display()),
        ],
    );
    assert!(
        shot.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1360, 1500));
    // A blank page of this size compresses to a few kB; the drawn page is far larger.
    assert!(
        bytes.len() > 40_000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("AGENTHELM_REPORT_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
        std::fs::copy(
            &page,
            format!(
                "{}.html",
                std::env::var("AGENTHELM_REPORT_SCREENSHOT").unwrap()
            ),
        )
        .unwrap();
    }
}

#[tokio::test]
async fn a_plan_of_hundreds_of_steps_stays_legible_in_chromium() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (scripts/test installs it with apt-get where apt is usable)");
        return;
    };
    let dir = TempDir::new("report-wide");
    let run = run_fixture::wide_run(&dir.join("store"), 12, 20, true).await;
    assert_eq!(run.plan.steps.len(), 240);
    let html = render_html(&run);
    let page = dir.join("wide.html");
    std::fs::write(&page, &html).unwrap();

    let dom = run_chromium(&chromium, &page, &dir.join("profile-dom"), &["--dump-dom"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium --dump-dom failed: {log}");
    assert_eq!(
        dom_text.matches(r#"<g class="node""#).count(),
        240,
        "every step in the graph"
    );
    assert_eq!(
        dom_text.matches(r#"<tr data-step="l"#).count(),
        240 + run
            .events
            .iter()
            .filter(|e| matches!(e.kind, agenthelm::EventKind::CompensationFinished { .. }))
            .count()
    );
    assert!(dom_text.contains(r#"data-status="failed""#));
    assert!(dom_text.contains(r#"data-status="compensated""#));
    assert!(dom_text.contains(r#"data-status="skipped""#));
    assert_eq!(
        page_errors(&log),
        Vec::<&str>::new(),
        "chromium reported errors"
    );

    let png = dir.join("wide.png");
    let shot = run_chromium(
        &chromium,
        &page,
        &dir.join("profile-shot"),
        &[
            "--window-size=1360,3000",
            "--hide-scrollbars",
            &format!("--screenshot={}", png.display()),
        ],
    );
    assert!(
        shot.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    assert!(
        bytes.len() > 100_000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("AGENTHELM_REPORT_SCREENSHOT") {
        std::fs::copy(&png, format!("{keep}.wide.png")).unwrap();
    }
}
