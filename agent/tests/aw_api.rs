//! The ActivityWatch-compatible API over real HTTP on loopback: what
//! aw-watcher-window, aw-watcher-afk and aw-client send, and the status codes
//! ActivityWatch's server answers bad requests with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use trackhrs_agent::aw::api;
use trackhrs_agent::aw::store::AwStore;

/// One request; the status and the body parsed as JSON (Null when empty).
async fn call(addr: SocketAddr, method: &str, path: &str, host: &str, body: &str) -> (u16, Value) {
    let (status, text) = trackhrs_harness::http::call(addr, method, path, host, body)
        .await
        .unwrap();
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

async fn server() -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Mutex::new(
        AwStore::open(&dir.path().join("aw.db")).unwrap(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origins = api::Origins::new(vec!["moz-extension://abc".into()]);
    tokio::spawn(api::serve(listener, store, origins, std::future::pending()));
    (addr, dir)
}

const HOST: &str = "localhost:5600";

#[tokio::test]
async fn watchers_report_and_clients_read_back() {
    let (addr, _dir) = server().await;
    let (status, info) = call(addr, "GET", "/api/0/info", HOST, "").await;
    assert_eq!(status, 200);
    assert!(info["hostname"].is_string() && info["version"].is_string());

    // aw-watcher-window: create its bucket (again: 304), then heartbeats.
    let bucket =
        json!({"client": "aw-watcher-window", "type": "currentwindow", "hostname": "laptop"})
            .to_string();
    let path = "/api/0/buckets/aw-watcher-window_laptop";
    assert_eq!(call(addr, "POST", path, HOST, &bucket).await.0, 200);
    assert_eq!(call(addr, "POST", path, HOST, &bucket).await.0, 304);
    let beat = |t: &str, title: &str| {
        json!({"timestamp": t, "duration": 0, "data": {"app": "code", "title": title}}).to_string()
    };
    let hb = format!("{path}/heartbeat?pulsetime=2.0");
    let (_, first) = call(
        addr,
        "POST",
        &hb,
        HOST,
        &beat("2026-11-29T09:00:00+00:00", "a.rs"),
    )
    .await;
    let (_, merged) = call(
        addr,
        "POST",
        &hb,
        HOST,
        &beat("2026-11-29T09:00:01.500000Z", "a.rs"),
    )
    .await;
    assert_eq!(merged["id"], first["id"]);
    assert_eq!(merged["duration"], 1.5);
    let (_, other) = call(
        addr,
        "POST",
        &hb,
        HOST,
        &beat("2026-11-29T09:00:02Z", "b.rs"),
    )
    .await;
    assert_ne!(other["id"], first["id"]);

    // aw-client: insert events (a list, or one), list, count, get, delete.
    let events = json!([
        {"timestamp": "2026-11-29T08:00:00Z", "duration": 60.0, "data": {"app": "mail", "title": "Inbox"}},
    ])
    .to_string();
    let (status, inserted) = call(addr, "POST", &format!("{path}/events"), HOST, &events).await;
    assert_eq!(status, 200);
    let id = inserted[0]["id"].as_i64().unwrap();
    let (_, listed) = call(addr, "GET", &format!("{path}/events?limit=-1"), HOST, "").await;
    let titles: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["b.rs", "a.rs", "Inbox"], "newest first");
    let (_, limited) = call(
        addr,
        "GET",
        &format!("{path}/events?limit=1&start=2026-11-29T07:00:00Z&end=2026-11-29T08:30:00Z"),
        HOST,
        "",
    )
    .await;
    assert_eq!(limited.as_array().unwrap().len(), 1);
    assert_eq!(limited[0]["data"]["title"], "Inbox");
    assert_eq!(
        call(addr, "GET", &format!("{path}/events/count"), HOST, "")
            .await
            .1,
        3
    );
    let (status, one) = call(addr, "GET", &format!("{path}/events/{id}"), HOST, "").await;
    assert_eq!((status, one["duration"].as_f64()), (200, Some(60.0)));
    assert_eq!(
        call(addr, "DELETE", &format!("{path}/events/{id}"), HOST, "")
            .await
            .0,
        200
    );
    assert_eq!(
        call(addr, "GET", &format!("{path}/events/{id}"), HOST, "")
            .await
            .0,
        404
    );
    let (_, buckets) = call(addr, "GET", "/api/0/buckets/", HOST, "").await;
    assert_eq!(buckets["aw-watcher-window_laptop"]["type"], "currentwindow");
    assert_eq!(call(addr, "DELETE", path, HOST, "").await.0, 200);
    assert_eq!(call(addr, "GET", path, HOST, "").await.0, 404);
}

#[tokio::test]
async fn bad_requests_get_activitywatchs_status_codes_and_change_nothing() {
    let (addr, _dir) = server().await;
    let path = "/api/0/buckets/w";
    let bucket = json!({"client": "c", "type": "currentwindow", "hostname": "h"}).to_string();
    let cases: [(&str, String, &str, u16); 9] = [
        ("POST", path.into(), "{not json", 400),
        (
            "POST",
            path.into(),
            r#"{"client": "c", "hostname": "h"}"#,
            422,
        ),
        ("GET", "/api/0/buckets/nope".into(), "", 404),
        ("GET", "/api/0/buckets/nope/events".into(), "", 404),
        (
            "POST",
            "/api/0/buckets/nope/heartbeat?pulsetime=1".into(),
            r#"{"timestamp": "2026-11-29T09:00:00Z", "data": {}}"#,
            404,
        ),
        ("POST", format!("{path}/heartbeat?pulsetime=1"), "[", 400),
        (
            "POST",
            format!("{path}/heartbeat?pulsetime=1"),
            r#"{"data": {"app": "x"}}"#,
            422,
        ),
        (
            "POST",
            format!("{path}/heartbeat"),
            r#"{"timestamp": "2026-11-29T09:00:00Z", "data": {}}"#,
            400,
        ),
        ("GET", format!("{path}/events?start=yesterday"), "", 400),
    ];
    assert_eq!(call(addr, "POST", path, HOST, &bucket).await.0, 200);
    for (method, p, body, expected) in cases {
        let (status, answer) = call(addr, method, &p, HOST, body).await;
        assert_eq!(status, expected, "{method} {p} {body}: {answer}");
    }
    // Events of the wrong shape in a list: 422, and none of the list stored.
    let mixed = r#"[{"timestamp": "2026-11-29T09:00:00Z", "data": {}}, {"data": {}}]"#;
    assert_eq!(
        call(addr, "POST", &format!("{path}/events"), HOST, mixed)
            .await
            .0,
        422
    );
    assert_eq!(
        call(addr, "GET", &format!("{path}/events/count"), HOST, "")
            .await
            .1,
        0
    );
    // Durations the store cannot keep, and pulsetimes past a century.
    let negative = r#"[{"timestamp": "2026-11-29T09:00:00Z", "duration": -5, "data": {}}]"#;
    assert_eq!(
        call(addr, "POST", &format!("{path}/events"), HOST, negative)
            .await
            .0,
        422
    );
    let beat = r#"{"timestamp": "2026-11-29T09:00:00Z", "duration": 1e300, "data": {}}"#;
    let hb = format!("{path}/heartbeat?pulsetime=1");
    assert_eq!(call(addr, "POST", &hb, HOST, beat).await.0, 422);
    let huge = format!("{path}/heartbeat?pulsetime=1e300");
    let ok_beat = r#"{"timestamp": "2026-11-29T09:00:00Z", "data": {}}"#;
    assert_eq!(call(addr, "POST", &huge, HOST, ok_beat).await.0, 400);
    assert_eq!(
        call(addr, "GET", &format!("{path}/events/count"), HOST, "")
            .await
            .1,
        0
    );
    // A web page of another origin, or a POST that is not JSON (a form a
    // page may send without asking), is refused; a browser extension is not.
    let raw = |headers: &'static [(&'static str, &'static str)], method: &'static str| {
        let path = path.to_owned();
        async move {
            trackhrs_harness::http::request(addr, method, &path, headers, "{}")
                .await
                .unwrap()
                .0
        }
    };
    let page = &[
        ("Host", HOST),
        ("Origin", "https://evil.example"),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(raw(page, "GET").await, 403);
    let form = &[("Host", HOST), ("Content-Type", "text/plain")];
    assert_eq!(raw(form, "POST").await, 415);
    let extension = &[("Host", HOST), ("Origin", "moz-extension://abc")];
    assert_eq!(raw(extension, "GET").await, 200);
    // Only the extensions allowed: any other one is refused.
    let other = &[("Host", HOST), ("Origin", "moz-extension://another")];
    assert_eq!(raw(other, "GET").await, 403);
    let chrome = &[("Host", HOST), ("Origin", "chrome-extension://abc")];
    assert_eq!(raw(chrome, "GET").await, 403);
    let own = &[("Host", HOST), ("Origin", "http://localhost:5600")];
    assert_eq!(raw(own, "GET").await, 200);
    // A page on another origin that rebinds its name to 127.0.0.1 is refused.
    assert_eq!(
        call(addr, "GET", "/api/0/buckets/", "evil.example:5600", "")
            .await
            .0,
        403
    );
    assert_eq!(
        call(addr, "GET", "/api/0/buckets/", "127.0.0.1:5600", "")
            .await
            .0,
        200
    );
    assert_eq!(
        call(addr, "GET", "/api/0/buckets/", "[::1]:5600", "")
            .await
            .0,
        200
    );
}

/// ActivityWatch's own client library (aw-client from PyPI, which
/// scripts/deps.sh installs and names in TRACKHRS_AW_CLIENT) against the API:
/// buckets, heartbeats, events, counts, deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activitywatchs_python_client_works_against_the_agent() {
    let (addr, dir) = server().await;
    let path = std::env::var("TRACKHRS_AW_CLIENT").expect(
        "TRACKHRS_AW_CLIENT names aw-client's folder: run scripts/deps.sh and source .tools/env",
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/aw_client_check.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(addr.port().to_string())
        .env("PYTHONPATH", path)
        // aw-client keeps its configuration and queue under these.
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "aw-client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("aw-client: ok"));
}

#[tokio::test]
async fn the_api_is_served_on_loopback_only_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    use trackhrs_agent::runner::{Agent, AgentConfig, AgentError};
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(
        "http://127.0.0.1:9",
        "thd_token",
        dir.path().join("outbox.db"),
    );
    config.activitywatch_store = dir.path().join("aw.db");
    config.activitywatch_listen = Some("0.0.0.0:0".parse().unwrap());
    match Agent::start_activitywatch(config.clone()) {
        Err(AgentError::NotLoopback { addr }) => assert_eq!(addr.port(), 0),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("served ActivityWatch's API on every interface"),
    }
    config.activitywatch_listen = Some("127.0.0.1:0".parse().unwrap());
    let agent = Agent::start_activitywatch(config).unwrap();
    for file in ["outbox.db", "aw.db"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    agent.stop(std::time::Duration::from_millis(100)).await;
}
