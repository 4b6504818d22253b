//! A real X11 desktop for tests: Xvfb on a free display number with the
//! openbox window manager, windows with known classes and titles, and
//! xdotool for focus and synthetic input (scripts/deps.sh installs all
//! three).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use x11rb::COPY_DEPTH_FROM_PARENT;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, CreateWindowAux, PropMode, Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// A process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 50 ms until it returns a value; panics naming `what`
/// after 20 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
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
pub struct Display {
    /// The display name, e.g. `:123`.
    pub name: String,
    _wm: Proc,
    _server: Proc,
}

impl Display {
    /// Starts Xvfb on a free display number (Xvfb picks it and reports it
    /// with `-displayfd`, so concurrent tests never race for one) and
    /// openbox on it.
    pub fn start() -> Self {
        let mut server = Proc(
            Command::new("Xvfb")
                .args([
                    "-displayfd",
                    "1",
                    "-screen",
                    "0",
                    "1024x768x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb (scripts/deps.sh installs it)"),
        );
        let mut number = String::new();
        BufReader::new(server.0.stdout.take().expect("Xvfb's stdout"))
            .read_line(&mut number)
            .expect("Xvfb reports its display number");
        let name = format!(":{}", number.trim());
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

    /// Runs xdotool on this display.
    pub fn xdotool(&self, args: &[&str]) {
        let status = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &self.name)
            .stdout(Stdio::null())
            .status()
            .expect("xdotool (scripts/deps.sh installs it)");
        assert!(status.success(), "xdotool {args:?}");
    }
}

/// The atom named `name`.
pub fn atom(conn: &RustConnection, name: &str) -> u32 {
    conn.intern_atom(false, name.as_bytes())
        .unwrap()
        .reply()
        .unwrap()
        .atom
}

/// Opens a window with `WM_CLASS` `instance\0class\0` and a UTF-8 title.
pub fn open_window(conn: &RustConnection, screen: usize, class: &str, title: &str) -> Window {
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
    set_class(conn, win, class);
    set_title(conn, win, title);
    // Managed by the window manager (it sets the window's desktop) before
    // anyone asks it to activate the window. A window mapped while the
    // window manager is still starting can be missed: mapped again then.
    let desktop = atom(conn, "_NET_WM_DESKTOP");
    wait_for("the window manager to manage a window", || {
        conn.map_window(win).ok()?;
        conn.flush().ok()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let reply = conn
                .get_property(false, win, desktop, AtomEnum::ANY, 0, 1)
                .ok()?
                .reply()
                .ok()?;
            if reply.value_len > 0 {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        conn.unmap_window(win).ok()?;
        None
    });
    win
}

/// Waits until `window` has the property `name` (set by someone else).
pub fn wait_for_property(conn: &RustConnection, window: Window, name: &str, what: &str) {
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

/// Sets the window's `WM_CLASS` to `instance\0class\0` (the instance is
/// the class in lower case).
pub fn set_class(conn: &RustConnection, win: Window, class: &str) {
    let wm_class = format!("{}\0{class}\0", class.to_lowercase());
    conn.change_property8(
        PropMode::REPLACE,
        win,
        AtomEnum::WM_CLASS,
        AtomEnum::STRING,
        wm_class.as_bytes(),
    )
    .unwrap();
    conn.flush().unwrap();
}

/// Sets the window's `_NET_WM_NAME`.
pub fn set_title(conn: &RustConnection, win: Window, title: &str) {
    let (name, utf8) = (atom(conn, "_NET_WM_NAME"), atom(conn, "UTF8_STRING"));
    conn.change_property8(PropMode::REPLACE, win, name, utf8, title.as_bytes())
        .unwrap();
    conn.flush().unwrap();
}
