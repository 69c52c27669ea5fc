//! The web UI's security over plain HTTP: sign-in, the session cookie, cross-site posts
//! refused, markup in runs shown as text, the token kept out of the journal.

mod common;

use common::{start, TOKEN};
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{redirect, Client, StatusCode};
use serde_json::{json, Value};

fn client() -> Client {
    Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client")
}

/// The cookie the sign-in link sets, as a `Cookie` header value.
async fn sign_in(client: &Client, url: &str) -> String {
    let answer = client
        .get(format!("{url}/?token={TOKEN}"))
        .send()
        .await
        .expect("sign-in link");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        answer.headers()[LOCATION],
        "/",
        "the token leaves the address"
    );
    let set = answer.headers()[SET_COOKIE]
        .to_str()
        .expect("text")
        .to_owned();
    for part in [
        "agenthelm_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(set.contains(part), "{part} in {set}");
    }
    assert!(
        !set.contains(TOKEN),
        "the cookie holds the token encoded, not as sent"
    );
    set.split(';').next().expect("pair").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_or_cookie_nothing_is_shown() {
    let server = start("ui-auth").await;
    let client = client();
    let url = &server.url;
    for (method, path) in [
        ("GET", "/api/runs"),
        ("GET", "/api/approvals"),
        ("POST", "/api/plans/check"),
        ("GET", "/api/runs/x/events"),
    ] {
        for auth in [None, Some("Bearer wrong-token-0123456789"), Some("cookie")] {
            let mut request =
                client.request(method.parse().expect("method"), format!("{url}{path}"));
            request = match auth {
                Some("cookie") => request.header(COOKIE, "agenthelm_session=6e6f7065"),
                Some(bearer) => request.header("authorization", bearer),
                None => request,
            };
            let answer = request
                .json(&json!({"plan": "goal: x"}))
                .send()
                .await
                .expect("send");
            assert_eq!(
                answer.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}"
            );
        }
    }
    for page in ["/", "/approvals", "/submit", "/runs/x"] {
        let answer = client
            .get(format!("{url}{page}"))
            .send()
            .await
            .expect("page");
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(answer.headers()[LOCATION], "/login");
    }
    let wrong = client
        .get(format!("{url}/?token=nope"))
        .send()
        .await
        .expect("link");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let form = client
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong")
        .send()
        .await
        .expect("login");
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED);
    assert!(form.text().await.expect("page").contains("not known"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_post_with_the_cookie_is_refused() {
    let server = start("ui-csrf").await;
    let client = client();
    let url = &server.url;
    let cookie = sign_in(&client, url).await;
    let plan = json!({"plan": {"goal": "g", "steps": [{"id": "a", "tool": "note"}]}});
    let post = |origin: Option<&str>| {
        let mut request = client
            .post(format!("{url}/api/runs"))
            .header(COOKIE, &cookie)
            .json(&plan);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send()
    };
    let foreign = post(Some("http://evil.example")).await.expect("send");
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let body: Value = foreign.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("own pages"));
    assert_eq!(
        post(None).await.expect("send").status(),
        StatusCode::FORBIDDEN
    );
    let runs: Value = client
        .get(format!("{url}/api/runs"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        runs,
        json!([]),
        "nothing was submitted by the refused posts"
    );
    // The server's own pages may; a bearer request is not a browser's.
    assert_eq!(
        post(Some(url)).await.expect("send").status(),
        StatusCode::CREATED
    );
    let bearer = client
        .post(format!("{url}/api/runs"))
        .bearer_auth(TOKEN)
        .header(ORIGIN, "http://evil.example")
        .json(&plan)
        .send()
        .await
        .expect("send");
    assert_eq!(bearer.status(), StatusCode::CREATED);
    let login = client
        .post(format!("{url}/login"))
        .header(ORIGIN, "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    assert!(login.headers().get(SET_COOKIE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_a_plan_is_served_as_text_and_the_token_stays_out_of_the_journal() {
    let server = start("ui-escape").await;
    let client = client();
    let url = &server.url;
    let cookie = sign_in(&client, url).await;
    let plan = json!({"plan": {
        "goal": "<script>alert('goal')</script>",
        "steps": [{"id": "a", "tool": "note", "description": "<img src=x onerror=alert(1)>"}]
    }});
    let created: Value = client
        .post(format!("{url}/api/runs"))
        .bearer_auth(TOKEN)
        .json(&plan)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let run_id = created["run_id"].as_str().expect("run id");
    let page = |path: String| {
        let client = client.clone();
        let cookie = cookie.clone();
        async move {
            let answer = client
                .get(path)
                .header(COOKIE, cookie)
                .send()
                .await
                .expect("page");
            assert_eq!(answer.status(), StatusCode::OK);
            let policy = answer.headers()["content-security-policy"]
                .to_str()
                .expect("text");
            assert!(policy.contains("default-src 'self'"));
            answer.text().await.expect("text")
        }
    };
    let list = page(format!("{url}/")).await;
    assert!(
        list.contains("&lt;script&gt;alert(&#39;goal&#39;)&lt;/script&gt;"),
        "{list}"
    );
    assert!(!list.contains("<script>alert"));
    let run = page(format!("{url}/runs/{run_id}")).await;
    assert!(
        run.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the review table"
    );
    assert!(!run.contains("<img src=x"));
    assert!(!run.contains("<script>alert"));
    let unsafe_filter = client
        .get(format!("{url}/?state=<b>x</b>"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(unsafe_filter.status(), StatusCode::BAD_REQUEST);
    assert!(!unsafe_filter
        .text()
        .await
        .expect("text")
        .contains("<b>x</b>"));
    // Nothing the server keeps holds the token, in any spelling the cookie used.
    let hex: String = TOKEN.bytes().map(|b| format!("{b:02x}")).collect();
    for entry in walk(server.dir.path()) {
        let bytes = std::fs::read(&entry).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(TOKEN) && !text.contains(&hex),
            "token in {}",
            entry.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_is_checked_without_being_submitted() {
    let server = start("ui-check").await;
    let client = client();
    let check = |plan: Value| {
        client
            .post(format!("{}/api/plans/check", server.url))
            .bearer_auth(TOKEN)
            .json(&json!({ "plan": plan }))
            .send()
    };
    let good = check(json!("goal: g\nsteps:\n  - id: a\n    tool: note\n"))
        .await
        .expect("send");
    assert_eq!(good.status(), StatusCode::OK);
    assert_eq!(
        good.json::<Value>().await.expect("json"),
        json!({"ok": true})
    );
    let bad = check(json!(
        "goal: g\nsteps:\n  - id: a\n    tool: note\n  - id: b\n    tool: note\n    depends_on: [nosuch]\n"
    ))
        .await
        .expect("send");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(
        body["problems"][0]["field"], "steps[1].depends_on",
        "{body}"
    );
    let unreadable = check(json!("goal: [")).await.expect("send");
    assert_eq!(unreadable.status(), StatusCode::BAD_REQUEST);
    let runs: Value = client
        .get(format!("{}/api/runs", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(runs, json!([]), "checking submits nothing");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
