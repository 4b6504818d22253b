//! The portal in a real browser: `trackhrs dev` (its own nats-server and
//! PostgreSQL, the demo org and its simulated agents) serving the built
//! portal, driven through Debian's Chromium by the scenarios of
//! `portal/tests/` (playwright-core), over TLS with the certificate of the
//! local CA `trackhrs dev` creates. Each test runs its own platform.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use trackhrs_harness::paths::free_port;

/// The demo org's password (README.md).
const DEMO_PASSWORD: &str = "trackhrs demo 2026";

fn portal() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../portal")
}

/// Stops `trackhrs dev` on drop: SIGTERM, so it stops its nats-server and
/// PostgreSQL too, then SIGKILL if it has not exited within 30 s.
struct Dev {
    child: std::process::Child,
    addr: SocketAddr,
    data: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `trackhrs dev` serving the built portal and waits until the portal
/// answers.
async fn start_dev() -> Dev {
    let dist = portal().join("dist");
    assert!(
        dist.join("index.html").is_file(),
        "the portal is not built: run scripts/deps.sh (it builds portal/dist)"
    );
    let data = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args([
            "dev",
            "--data-dir",
            data.path().join("data").to_str().unwrap(),
            "--nats-port",
            &free_port().to_string(),
            "--pg-port",
            &free_port().to_string(),
            "--listen",
            &addr.to_string(),
            "--metrics-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--portal-dir",
            dist.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let dev = Dev { child, addr, data };
    // Served over TLS (the default) with its local CA's certificate.
    common::dev_channel(&dev.data.path().join("data"), addr.port()).await;
    dev
}

/// Runs the browser scenario `name` against a fresh `trackhrs dev` and
/// fails with what it printed when it fails; returns what it printed.
async fn scenario(name: &str) -> String {
    let dev = start_dev().await;
    let fixture = serde_json::json!({
        "url": format!("https://{}", dev.addr),
        // Chromium trusts exactly the gateway's key (the local CA is not
        // in its store).
        "spki": trackhrs_harness::tls::spki_sha256_base64(
            &std::fs::read_to_string(dev.data.path().join("data/tls/gateway.key")).unwrap()
        )
        .unwrap(),
        "org": "acme",
        "password": DEMO_PASSWORD,
        // The demo org has no admin: its owner does what an admin does.
        "users": {
            "owner": "olive@acme.test",
            "admin": "olive@acme.test",
            "manager": "manny@acme.test",
            "employee": "erin@acme.test",
            "auditor": "ada@acme.test",
        },
    });
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal");
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = tokio::process::Command::new("node")
        .arg("tests/run.mjs")
        .arg(name)
        .current_dir(portal())
        .env("PORTAL_FIXTURE", fixture.to_string())
        .env("PORTAL_ARTIFACTS", &artifacts)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run node (Node.js is installed by scripts/deps.sh)");
    assert!(
        out.status.success(),
        "portal scenario {name} failed (screenshots in {}):\n{}\n{}",
        artifacts.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(dev);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_and_out_keeps_no_token_where_scripts_can_read_it() {
    scenario("signin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_simulated_agents_day_by_role() {
    scenario("dashboard").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_invite_and_manage_members_and_auditors_only_read() {
    scenario("members").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_fits_a_phone_and_a_laptop_screen() {
    scenario("layout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_history_filtered_and_managers_cannot() {
    scenario("history").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_the_read_models_and_replay_others_see_no_operations() {
    scenario("operations").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_edited_with_the_servers_messages_and_imported() {
    scenario("rules").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_weeks_and_approvals_through_the_pages() {
    scenario("work").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_and_payroll_through_the_pages() {
    scenario("payroll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_refresh_silently_and_a_refused_call_is_retried_after_one_refresh() {
    scenario("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_at_both_sizes_is_screenshotted_and_has_no_serious_accessibility_violation() {
    let out = scenario("pages").await;
    let shots = out.lines().filter(|l| l.contains("screenshot ")).count();
    assert_eq!(shots, 26, "13 pages at 2 sizes:\n{out}");
}

/// The one protobuf message of a gRPC-Web answer (data frame 0x00, then a
/// trailer frame 0x80 with `grpc-status: 0`).
fn grpc_web_message(body: &[u8]) -> &[u8] {
    let mut rest = body;
    let mut message = None;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let (frame, next) = rest[5..].split_at(len);
        match rest[0] {
            0x00 => message = Some(frame),
            0x80 => assert!(
                String::from_utf8_lossy(frame).contains("grpc-status:0"),
                "the answer failed: {}",
                String::from_utf8_lossy(frame)
            ),
            flag => panic!("unknown gRPC-Web frame {flag:#x}"),
        }
        rest = next;
    }
    assert!(rest.is_empty(), "a truncated gRPC-Web answer");
    message.expect("no message in the answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_numbers_are_the_grpc_answers() {
    use base64::Engine as _;
    use prost::Message as _;
    use trackhrs_schemas::activity::v1::DashboardSummary;

    let out = scenario("numbers").await;
    for figure in out.lines().filter(|l| l.starts_with("FIGURE ")) {
        eprintln!("{figure}");
    }
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("NUMBERS "))
        .unwrap_or_else(|| panic!("the scenario printed no NUMBERS:\n{out}"));
    let numbers: serde_json::Value = serde_json::from_str(line).unwrap();
    let body = base64::engine::general_purpose::STANDARD
        .decode(numbers["grpc_web_base64"].as_str().unwrap())
        .unwrap();
    let answer = DashboardSummary::decode(grpc_web_message(&body)).unwrap();
    let dom = &numbers["dom"];
    eprintln!(
        "the week {} to {}: {} members with time, {} categories",
        dom["from"],
        dom["to"],
        answer.members.len(),
        answer.categories.len()
    );
    assert_eq!(answer.org_id, "acme");
    assert_eq!(dom["position"], answer.position.to_string());
    let active: i64 = answer.members.iter().map(|m| m.active_ms).sum();
    let idle: i64 = answer.members.iter().map(|m| m.idle_ms).sum();
    assert!(active > 0, "no time in the week's answer");
    assert_eq!(
        (dom["active_ms"].as_i64(), dom["idle_ms"].as_i64()),
        (Some(active), Some(idle))
    );
    assert_eq!(dom["productivity"], format!("{:.0}", answer.productivity));
    // Every member row: the answer's figures, or zero for members without time.
    let rows = dom["members"].as_array().unwrap();
    for row in rows {
        let id = row["person_id"].as_str().unwrap();
        let shown = (
            row["active_ms"].as_i64(),
            row["idle_ms"].as_i64(),
            row["days"].as_u64(),
        );
        match answer.members.iter().find(|m| m.person_id == id) {
            Some(m) => assert_eq!(
                shown,
                (Some(m.active_ms), Some(m.idle_ms), Some(u64::from(m.days))),
                "{id}"
            ),
            None => assert_eq!(
                shown,
                (Some(0), Some(0), Some(0)),
                "{id} has no time in the answer"
            ),
        }
    }
    assert!(
        answer
            .members
            .iter()
            .all(|m| rows.iter().any(|r| r["person_id"] == m.person_id.as_str())),
        "a member of the answer is missing from the table"
    );
    // Categories and apps with active time, as the legends list them.
    let listed = |list: &[trackhrs_schemas::activity::v1::Breakdown]| {
        list.iter()
            .filter(|b| b.active_ms > 0)
            .map(|b| (b.name.clone(), serde_json::Value::from(b.active_ms)))
            .collect::<serde_json::Map<_, _>>()
    };
    assert_eq!(
        dom["categories"],
        serde_json::Value::Object(listed(&answer.categories))
    );
    assert_eq!(dom["apps"], serde_json::Value::Object(listed(&answer.apps)));
}
