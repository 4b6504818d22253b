//! The desktop app end to end: the real app binary under Xvfb with openbox,
//! enrolled at a real platform (nats-server, PostgreSQL, gateway); its
//! window found, photographed and read (tesseract), its pause button
//! clicked with synthetic input, and what it captured read back from its
//! local store through its ActivityWatch API.

use trackhrs_testkit as platform;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use platform::{Platform, authed};
use trackhrs_harness::desktop::{Display, Proc, Rect, Screenshot, open_window, set_title};
use trackhrs_harness::http;
use trackhrs_schemas::activity::v1 as activity_pb;
use trackhrs_schemas::activity::v1::activity_client::ActivityClient;

/// The switch's colours (ui/style.css).
const PAUSE_RED: [u8; 3] = [0xc6, 0x28, 0x28];
const RESUME_GREEN: [u8; 3] = [0x2e, 0x7d, 0x32];

/// Where the screenshots go (kept after the run, to look at).
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("desktop-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The app's window and what it shows.
struct Window<'a> {
    display: &'a Display,
    id: String,
}

impl Window<'_> {
    fn rect(&self) -> Rect {
        self.display.window_rect(&self.id)
    }

    fn shot(&self) -> Screenshot {
        self.display.screenshot().crop(self.rect())
    }

    /// Waits (60 s) until the window reads `wanted` (every word, ignoring
    /// case) and shows `color`; saves the screenshot as `name`.png and
    /// returns its text and where `color` is on the screen.
    async fn wait_until_it_shows(
        &self,
        name: &str,
        wanted: &[&str],
        color: [u8; 3],
    ) -> (String, Rect) {
        self.shows_within(name, wanted, color, Duration::from_secs(60))
            .await
            .unwrap_or_else(|text| {
                panic!(
                    "the window never showed {wanted:?} with the colour {color:?} ({name}); it read:\n{text}"
                )
            })
    }

    /// Clicks `at` until the window shows what [`Window::wait_until_it_shows`]
    /// waits for, as a user clicks again when a click did not take (a click
    /// on the inactive window under Xvfb is now and then lost): at most
    /// three clicks, 15 s apart.
    async fn click_until_it_shows(
        &self,
        at: Rect,
        name: &str,
        wanted: &[&str],
        color: [u8; 3],
    ) -> (String, Rect) {
        let mut text = String::new();
        for _ in 0..3 {
            self.click(at);
            match self
                .shows_within(name, wanted, color, Duration::from_secs(15))
                .await
            {
                Ok(shown) => return shown,
                Err(read) => text = read,
            }
        }
        panic!(
            "three clicks and the window never showed {wanted:?} with the colour {color:?} ({name}); it read:\n{text}"
        )
    }

    /// What the window reads and where `color` is once it shows both within
    /// `wait`; else what it read last.
    async fn shows_within(
        &self,
        name: &str,
        wanted: &[&str],
        color: [u8; 3],
        wait: Duration,
    ) -> Result<(String, Rect), String> {
        let deadline = Instant::now() + wait;
        loop {
            let rect = self.rect();
            let shot = self.shot();
            let text = shot.text(&shots().join(format!("{name}-ocr.png")));
            let lower = text.to_lowercase();
            let found = shot.find(color);
            if wanted.iter().all(|w| lower.contains(&w.to_lowercase()))
                && let Some((r, pixels)) = found
                && pixels > 2_000
            {
                shot.save_png(&shots().join(format!("{name}.png")));
                return Ok((
                    text,
                    Rect {
                        x: rect.x + r.x,
                        y: rect.y + r.y,
                        ..r
                    },
                ));
            }
            if Instant::now() >= deadline {
                return Err(text);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Moves the pointer onto `at` (from off it, so the web view sees it
    /// arrive) and clicks.
    fn click(&self, at: Rect) {
        let (x, y) = at.center();
        self.display.xdotool(&["mousemove", "0", "0"]);
        self.display
            .xdotool(&["mousemove", &x.to_string(), &y.to_string(), "click", "1"]);
    }
}

/// Titles in the app's local window timeline, through its ActivityWatch
/// API (the local store the app reads for today).
async fn local_titles(api: SocketAddr) -> Vec<String> {
    let host = api.to_string();
    let (status, body) = http::call(api, "GET", "/api/0/buckets/", &host, "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let buckets: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut titles = Vec::new();
    for (id, b) in buckets.as_object().unwrap() {
        if b["type"] != "currentwindow" {
            continue;
        }
        let (status, body) = http::call(
            api,
            "GET",
            &format!("/api/0/buckets/{id}/events"),
            &host,
            "",
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let events: serde_json::Value = serde_json::from_str(&body).unwrap();
        for e in events.as_array().unwrap() {
            titles.push(e["data"]["title"].as_str().unwrap_or_default().to_owned());
        }
    }
    titles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_shows_the_day_by_category_and_its_pause_button_stops_capture() {
    let platform = Platform::start().await;
    let owner = platform.sign_up("deskorg", 5).await;
    // The org's own rules: the writer's windows are "Writing".
    ActivityClient::new(platform.gw().channel.clone())
        .set_category_rules(authed(
            &owner.access_token,
            activity_pb::SetCategoryRulesRequest {
                command_id: "rules-1".into(),
                org_id: owner.org_id.clone(),
                rules: vec![activity_pb::CategoryRule {
                    name: vec!["Writing".into()],
                    regex: Some("TrackhrsWriter".into()),
                    ignore_case: false,
                    score: Some(60),
                }],
                activitywatch_json: String::new(),
            },
        ))
        .await
        .unwrap();
    let device = platform.enroll(&owner, "Desk").await;

    let display = Display::start();
    let (conn, screen) = x11rb::connect(Some(&display.name)).unwrap();
    let writer = open_window(&conn, screen, "TrackhrsWriter", "Chapter one");
    let writer_id = writer.to_string();
    display.xdotool(&["windowmove", &writer_id, "600", "60"]);

    let data = tempfile::tempdir().unwrap();
    let api = free_addr();
    let _app = Proc(
        Command::new(env!("CARGO_BIN_EXE_trackhrs-desktop"))
            .args([
                "--gateway",
                &format!("http://{}", platform.gw().addr),
                "--data-dir",
                data.path().to_str().unwrap(),
                "--poll-ms",
                "250",
                "--upload-every-ms",
                "500",
                "--policy-every-secs",
                "1",
                "--max-backoff-ms",
                "500",
                "--activitywatch-listen",
                &api.to_string(),
            ])
            .env("DISPLAY", &display.name)
            .env("TRACKHRS_DEVICE_TOKEN", &device.device_token)
            .env("RUST_LOG", "info")
            // The app's log, kept beside the screenshots for a failure.
            .stdout(std::fs::File::create(shots().join("app.log")).unwrap())
            .spawn()
            .expect("the desktop app"),
    );
    let id = trackhrs_harness::desktop::wait_for("the app's window", || {
        display
            .xdotool_output(&["search", "--name", "^TrackHrs$"])
            .and_then(|out| out.lines().next().map(str::to_owned))
    });
    let window = Window {
        display: &display,
        id,
    };
    display.xdotool(&["windowmove", &window.id, "0", "0"]);
    display.xdotool(&["windowactivate", "--sync", &writer_id]);

    // The window shows the app's content: tracking, the org's category for
    // what was worked on, the policy received from the platform, and the
    // pause switch.
    let (text, pause) = window
        .wait_until_it_shows(
            "tracking",
            &["TrackHrs", "Tracking", "Writing", "Window titles recorded"],
            PAUSE_RED,
        )
        .await;
    let label = |name: &str, r: Rect| {
        display
            .screenshot()
            .crop(r)
            .text_line(&shots().join(format!("{name}-label.png")))
    };
    assert!(label("pause", pause).contains("Pause"), "{text}");
    assert!(local_titles(api).await.iter().any(|t| t == "Chapter one"));

    // The pause button, clicked: the window says so and nothing of what
    // happens meanwhile is captured.
    let (_, resume) = window
        .click_until_it_shows(
            pause,
            "paused",
            &["Paused: nothing is recorded"],
            RESUME_GREEN,
        )
        .await;
    assert!(label("resume", resume).contains("Resume"));
    display.xdotool(&["windowactivate", "--sync", &writer_id]);
    set_title(&conn, writer, "Secret plans");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let titles = local_titles(api).await;
    assert!(
        !titles.iter().any(|t| t == "Secret plans"),
        "captured while paused: {titles:?}"
    );

    // Resumed: the same window is captured again (so the check above
    // could have failed).
    window
        .click_until_it_shows(resume, "resumed", &["Tracking"], PAUSE_RED)
        .await;
    display.xdotool(&["windowactivate", "--sync", &writer_id]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !local_titles(api).await.iter().any(|t| t == "Secret plans") {
        assert!(Instant::now() < deadline, "not captured after resuming");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The device revoked: the app tells the employee.
    platform
        .revoke(&owner, &device.device_id, "revoke-desk")
        .await;
    window
        .wait_until_it_shows("refused", &["refused", "enroll it again"], PAUSE_RED)
        .await;
}
