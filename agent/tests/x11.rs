//! X11 capture for real: an Xvfb display with the openbox window manager,
//! windows with known classes and titles, focus switched with xdotool, and
//! idle time driven by synthetic input.

use std::time::{Duration, Instant};

use trackhrs_agent::capture::{Capture, X11Capture};
use trackhrs_agent::heartbeat::Merger;
use trackhrs_harness::desktop::{Display, open_window, set_title, wait_for};

#[test]
fn the_active_window_and_idle_time_are_captured_from_x11() {
    let display = Display::start();
    let (conn, screen) = x11rb::connect(Some(&display.name)).unwrap();
    let editor = open_window(&conn, screen, "EditorApp", "main.rs — editor");
    let browser = open_window(&conn, screen, "BrowserApp", "Docs - browser");
    let mut capture = X11Capture::connect(Some(&display.name)).unwrap();
    let mut merger = Merger::new(Duration::from_millis(100));
    let mut spans = Vec::new();
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as i64;

    for (window, app, title) in [
        (editor, "EditorApp", "main.rs — editor"),
        (browser, "BrowserApp", "Docs - browser"),
    ] {
        display.xdotool(&["windowactivate", "--sync", &window.to_string()]);
        // Poll every 100 ms for about a second on this window.
        let seen = wait_for("the activated window", || {
            let o = capture.observe().ok()?;
            (o.app == app).then_some(o)
        });
        assert_eq!(seen.title, title);
        for _ in 0..10 {
            let o = capture.observe().unwrap();
            spans.extend(merger.heartbeat(o.heartbeat(now_ms(), Duration::from_secs(180))));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // A title change is seen on the next poll.
    set_title(&conn, browser, "Other docs - browser");
    let retitled = wait_for("the new title", || {
        let o = capture.observe().ok()?;
        (o.title == "Other docs - browser").then_some(o)
    });
    assert_eq!(retitled.app, "BrowserApp");
    spans.extend(merger.heartbeat(retitled.heartbeat(now_ms(), Duration::from_secs(180))));
    spans.extend(merger.flush());

    let apps: Vec<&str> = spans.iter().map(|s| s.data.app.as_str()).collect();
    assert_eq!(&apps[..2], ["EditorApp", "BrowserApp"], "{spans:?}");
    for span in &spans[..2] {
        // Ten polls 100 ms apart: about 900 ms, allowing a slow machine.
        assert!(
            (800..3000).contains(&span.duration_ms),
            "{}: {} ms",
            span.data.app,
            span.duration_ms
        );
    }
    assert!(spans[0].end_ms() <= spans[1].start_ms);

    // Idle time: synthetic input resets it; without input it grows, and a
    // heartbeat past the idle threshold is idle.
    display.xdotool(&["mousemove", "10", "10"]);
    display.xdotool(&["mousemove", "20", "20"]);
    let fresh = capture.observe().unwrap();
    assert!(fresh.idle < Duration::from_millis(900), "{:?}", fresh.idle);
    std::thread::sleep(Duration::from_millis(1500));
    let later = capture.observe().unwrap();
    assert!(
        later.idle >= Duration::from_millis(1200),
        "{:?}",
        later.idle
    );
    assert!(
        !later
            .heartbeat(now_ms(), Duration::from_secs(1))
            .data
            .active
    );
    assert!(
        fresh
            .heartbeat(now_ms(), Duration::from_secs(1))
            .data
            .active
    );
}
