//! `--otlp-endpoint` / `OTEL_EXPORTER_OTLP_ENDPOINT` against a loopback OTLP/HTTP receiver, and
//! `agenthelm runs report`.

mod common;
// The library's loopback collector, which decodes OTLP protobuf and JSON.
#[path = "../../agenthelm/tests/otlp_collector/mod.rs"]
mod otlp_collector;
use common::*;
use otlp_collector::{decode, Collector};
use serde_json::Value;

const FAILING: &str = r#"goal: make a chain, then fail
steps:
  - {id: a, tool: make, args: {name: a}}
  - {id: b, tool: make, args: {name: b}, depends_on: [a]}
  - {id: c, tool: make, args: {name: c, fail: true}, depends_on: [b]}
"#;

fn bench() -> TempDir {
    let dir = TempDir::new("cli-telemetry");
    dir.write("agenthelm.yaml", LOGGING_WORKSPACE);
    dir.write("tool.py", LOGGING_TOOL);
    dir.write("plan.yaml", FAILING);
    dir
}

/// A loopback OTLP/HTTP receiver: answers every request with 200 and records it before
/// answering, so the test sees it once the command has ended.
fn receiver() -> Collector {
    Collector::start()
}

fn span_names(request: &agenthelm_test_support::Received) -> Vec<String> {
    decode(request).into_iter().map(|s| s.name).collect()
}

#[test]
fn a_run_is_exported_to_the_endpoint_of_the_flag_or_the_environment() {
    let receiver = receiver();
    let url = receiver.url();
    let dir = bench();
    let run = run(
        dir.path(),
        &["execute", "plan.yaml", "--yes", "--otlp-endpoint", url],
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("Exported "), "{}", run.stderr);
    let exported = receiver.requests();
    let first = exported.first().expect("nothing was exported");
    assert_eq!(first.path, "/v1/traces");
    let names = span_names(first);
    for expected in [
        "agenthelm.run",
        "step a",
        "step c",
        "execute_tool make",
        "compensate unmake",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }

    // The environment variable does the same, for a resumed run too (exported whole).
    let killed = agenthelm(dir.path())
        .args(["execute", "plan.yaml", "--yes"])
        .env("KILL_AT", "do:b:after")
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None);
    let listed: Value =
        serde_json::from_str(&common::run(dir.path(), &["runs", "list", "--json"]).stdout).unwrap();
    let id = listed[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        receiver.requests().len(),
        1,
        "a killed run exported nothing"
    );
    // In JSON this time, as the standard variable asks.
    let resumed = output(
        agenthelm(dir.path())
            .args(["resume", &id])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", url)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .output()
            .unwrap(),
    );
    assert_eq!(resumed.code, 1, "{}", resumed.all());
    let exported = receiver.requests();
    let export = exported.get(1).expect("the resumed run was not exported");
    assert_eq!(export.header("content-type"), Some("application/json"));
    let names = span_names(export);
    // b ran twice (killed, then re-run): both attempts are on record.
    assert_eq!(
        names.iter().filter(|n| *n == "step b").count(),
        2,
        "{names:?}"
    );
}

#[test]
fn a_bad_endpoint_is_refused_before_anything_runs_and_an_unreachable_one_is_a_warning() {
    let dir = bench();
    let bad = run(
        dir.path(),
        &[
            "execute",
            "plan.yaml",
            "--yes",
            "--otlp-endpoint",
            "localhost:4318",
        ],
    );
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("--otlp-endpoint"), "{}", bad.stderr);
    assert!(!dir.path().join("calls.log").exists());
    let bad_env = output(
        agenthelm(dir.path())
            .args(["execute", "plan.yaml", "--yes"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://127.0.0.1:9")
            .output()
            .unwrap(),
    );
    assert_eq!(bad_env.code, 2, "{}", bad_env.all());
    assert!(
        bad_env.stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{}",
        bad_env.stderr
    );

    // A malformed header list is named, without the values in it.
    let bad_headers = output(
        agenthelm(dir.path())
            .args(["execute", "plan.yaml", "--yes"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=hunter2,broken-hunter3",
            )
            .output()
            .unwrap(),
    );
    assert_eq!(bad_headers.code, 2, "{}", bad_headers.all());
    assert!(
        bad_headers
            .stderr
            .contains("OTLP header 2 in OTEL_EXPORTER_OTLP_HEADERS: expected key=value"),
        "{}",
        bad_headers.stderr
    );
    assert!(
        !bad_headers.all().contains("hunter"),
        "{}",
        bad_headers.all()
    );
    assert!(!dir.path().join("calls.log").exists());

    // Port 9 on loopback is closed: the run keeps its own exit code.
    let unreachable = run(
        dir.path(),
        &[
            "execute",
            "plan.yaml",
            "--yes",
            "--otlp-endpoint",
            "http://127.0.0.1:9",
        ],
    );
    assert_eq!(unreachable.code, 1, "{}", unreachable.all());
    assert!(
        unreachable.stderr.contains("warning: spans not exported"),
        "{}",
        unreachable.stderr
    );
}

#[test]
fn runs_report_writes_one_self_contained_page() {
    let dir = bench();
    let run = run(dir.path(), &["execute", "plan.yaml", "--yes", "--json"]);
    let id = serde_json::from_str::<Value>(&run.stdout).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let made = common::run(dir.path(), &["runs", "report", &id, "-o", "page.html"]);
    assert_eq!(made.code, 0, "{}", made.all());
    let page = dir.read("page.html");
    assert!(
        page.to_ascii_lowercase().starts_with("<!doctype html"),
        "{}",
        &page[..80]
    );
    assert!(page.contains(&id));
    assert!(page.contains("make a chain, then fail"));
    // Self-contained: nothing is fetched from elsewhere.
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    let missing = common::run(dir.path(), &["runs", "report", "run-nope", "-o", "x.html"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no run `run-nope`"),
        "{}",
        missing.stderr
    );
    assert!(!dir.path().join("x.html").exists());
}
