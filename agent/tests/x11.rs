//! X11 capture for real: an Xvfb display with the openbox window manager,
//! windows with known classes and titles, focus switched with xdotool, and
//! idle time driven by synthetic input.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trackhrs_agent::capture::{Capture, X11Capture};
use trackhrs_agent::heartbeat::Merger;
use x11rb::COPY_DEPTH_FROM_PARENT;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, CreateWindowAux, PropMode, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Xvfb on a free display number, with openbox running on it.
struct Display {
    name: String,
    _wm: Proc,
    _server: Proc,
}

impl Display {
    fn start() -> Self {
        let n = (100..400)
            .map(|n| n + std::process::id() % 100)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .expect("a free X display number");
        let name = format!(":{n}");
        let server = Proc(
            Command::new("Xvfb")
                .args([&name, "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb (scripts/deps.sh installs it)"),
        );
        wait_for("Xvfb", || x11rb::connect(Some(&name)).ok());
        let wm = Proc(
            Command::new("openbox")
                .arg("--sm-disable")
                .env("DISPLAY", &name)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("openbox (scripts/deps.sh installs it)"),
        );
        let (conn, screen) = x11rb::connect(Some(&name)).unwrap();
        let root = conn.setup().roots[screen].root;
        wait_for_property(&conn, root, "_NET_SUPPORTING_WM_CHECK", "openbox");
        Self {
            name,
            _wm: wm,
            _server: server,
        }
    }

    fn xdotool(&self, args: &[&str]) {
        let status = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &self.name)
            .stdout(Stdio::null())
            .status()
            .expect("xdotool (scripts/deps.sh installs it)");
        assert!(status.success(), "xdotool {args:?}");
    }
}

fn atom(conn: &RustConnection, name: &str) -> u32 {
    conn.intern_atom(false, name.as_bytes())
        .unwrap()
        .reply()
        .unwrap()
        .atom
}

/// Opens a window with `WM_CLASS` `instance\0class\0` and a UTF-8 title.
fn open_window(conn: &RustConnection, screen: usize, class: &str, title: &str) -> Window {
    let screen = &conn.setup().roots[screen];
    let win = conn.generate_id().unwrap();
    conn.create_window(
        COPY_DEPTH_FROM_PARENT,
        win,
        screen.root,
        0,
        0,
        400,
        300,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new().background_pixel(screen.white_pixel),
    )
    .unwrap();
    let wm_class = format!("{}\0{class}\0", class.to_lowercase());
    conn.change_property8(
        PropMode::REPLACE,
        win,
        AtomEnum::WM_CLASS,
        AtomEnum::STRING,
        wm_class.as_bytes(),
    )
    .unwrap();
    set_title(conn, win, title);
    conn.map_window(win).unwrap();
    conn.flush().unwrap();
    // Managed by the window manager (it sets the window's desktop) before
    // anyone asks it to activate the window.
    wait_for_property(
        conn,
        win,
        "_NET_WM_DESKTOP",
        "the window manager to manage a window",
    );
    win
}

/// Waits until `window` has the property `name` (set by someone else).
fn wait_for_property(conn: &RustConnection, window: Window, name: &str, what: &str) {
    let property = atom(conn, name);
    wait_for(what, || {
        let reply = conn
            .get_property(false, window, property, AtomEnum::ANY, 0, 1)
            .ok()?
            .reply()
            .ok()?;
        (reply.value_len > 0).then_some(())
    });
}

fn set_title(conn: &RustConnection, win: Window, title: &str) {
    let (name, utf8) = (atom(conn, "_NET_WM_NAME"), atom(conn, "UTF8_STRING"));
    conn.change_property8(PropMode::REPLACE, win, name, utf8, title.as_bytes())
        .unwrap();
    conn.flush().unwrap();
}

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
