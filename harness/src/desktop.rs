//! A real X11 desktop for tests: Xvfb on a free display number with the
//! openbox window manager, windows with known classes and titles, xdotool
//! for focus and synthetic input, and screenshots read by eye (PNG) and by
//! tesseract (OCR) (scripts/deps.sh installs them).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use x11rb::COPY_DEPTH_FROM_PARENT;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, CreateWindowAux, ImageFormat, PropMode, Window, WindowClass,
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
                    // Without it Xvfb resets when its last client leaves
                    // (the readiness probe below) and drops connections
                    // made meanwhile.
                    "-noreset",
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
        assert!(self.xdotool_output(args).is_some(), "xdotool {args:?}");
    }

    /// Runs xdotool on this display; its output when it succeeds.
    pub fn xdotool_output(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &self.name)
            .stderr(Stdio::null())
            .output()
            .expect("xdotool (scripts/deps.sh installs it)");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Where window `id` (an X window id in decimal, as xdotool prints
    /// it) is on the screen: its inside, without the window manager's frame.
    pub fn window_rect(&self, id: &str) -> Rect {
        let window: Window = id.trim().parse().expect("a window id");
        let (conn, screen) = x11rb::connect(Some(&self.name)).expect("the display");
        let root = conn.setup().roots[screen].root;
        let geometry = conn.get_geometry(window).unwrap().reply().unwrap();
        let at = conn
            .translate_coordinates(window, root, 0, 0)
            .unwrap()
            .reply()
            .unwrap();
        Rect {
            x: at.dst_x.max(0) as u32,
            y: at.dst_y.max(0) as u32,
            width: u32::from(geometry.width),
            height: u32::from(geometry.height),
        }
    }

    /// The whole screen as it is now.
    pub fn screenshot(&self) -> Screenshot {
        let (conn, screen) = x11rb::connect(Some(&self.name)).expect("the display");
        let root = &conn.setup().roots[screen];
        let (width, height) = (root.width_in_pixels, root.height_in_pixels);
        let image = conn
            .get_image(ImageFormat::Z_PIXMAP, root.root, 0, 0, width, height, !0)
            .unwrap()
            .reply()
            .unwrap();
        // Xvfb's 24-bit screen: 32 bits per pixel, blue green red unused.
        assert_eq!(image.depth, 24, "a 24-bit screen");
        let rgb = image
            .data
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        Screenshot {
            width: u32::from(width),
            height: u32::from(height),
            rgb,
        }
    }
}

/// A rectangle on the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// The middle.
    pub fn center(&self) -> (u32, u32) {
        (self.x + self.width / 2, self.y + self.height / 2)
    }
}

/// Pixels of a screenshot, RGB, row by row.
pub struct Screenshot {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Three bytes per pixel.
    pub rgb: Vec<u8>,
}

impl Screenshot {
    /// The colour at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The part inside `r` (clipped to the screenshot).
    pub fn crop(&self, r: Rect) -> Screenshot {
        let x1 = (r.x + r.width).min(self.width);
        let y1 = (r.y + r.height).min(self.height);
        let (x0, y0) = (r.x.min(x1), r.y.min(y1));
        let mut rgb = Vec::with_capacity(((x1 - x0) * (y1 - y0) * 3) as usize);
        for y in y0..y1 {
            let start = ((y * self.width + x0) * 3) as usize;
            rgb.extend_from_slice(&self.rgb[start..start + ((x1 - x0) * 3) as usize]);
        }
        Screenshot {
            width: x1 - x0,
            height: y1 - y0,
            rgb,
        }
    }

    /// The bounding box of the pixels of exactly `color`, and how many there
    /// are; None when there is none.
    pub fn find(&self, color: [u8; 3]) -> Option<(Rect, u32)> {
        let (mut x0, mut y0, mut x1, mut y1, mut n) = (u32::MAX, u32::MAX, 0, 0, 0);
        for y in 0..self.height {
            for x in 0..self.width {
                if self.pixel(x, y) == color {
                    (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                    n += 1;
                }
            }
        }
        (n > 0).then(|| {
            (
                Rect {
                    x: x0,
                    y: y0,
                    width: x1 - x0 + 1,
                    height: y1 - y0 + 1,
                },
                n,
            )
        })
    }

    /// Writes it as a PNG file.
    pub fn save_png(&self, path: &Path) {
        let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        let mut encoder = png::Encoder::new(file, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&self.rgb).unwrap();
    }

    /// The text tesseract reads in it, scaled up twice (which helps it with
    /// screen-sized fonts): once as it is and once in inverted colours (for
    /// light text on dark or coloured ground), the two texts one after the
    /// other. The images are saved as `path` and `path` with `-inverted`.
    pub fn text(&self, path: &Path) -> String {
        let mut text = self.ocr(path, false, "3");
        text.push('\n');
        text.push_str(&self.ocr(&inverted(path), true, "3"));
        text
    }

    /// The one line of text tesseract reads in it (a button's label), light
    /// on dark or dark on light; saved as `path` like [`Screenshot::text`].
    pub fn text_line(&self, path: &Path) -> String {
        let mut text = self.ocr(path, false, "7");
        text.push('\n');
        text.push_str(&self.ocr(&inverted(path), true, "7"));
        text
    }

    fn ocr(&self, file: &Path, invert: bool, page_segmentation: &str) -> String {
        let mut big = Vec::with_capacity(self.rgb.len() * 4);
        for y in 0..self.height * 2 {
            for x in 0..self.width * 2 {
                let p = self.pixel(x / 2, y / 2);
                big.extend(p.map(|c| if invert { 255 - c } else { c }));
            }
        }
        Screenshot {
            width: self.width * 2,
            height: self.height * 2,
            rgb: big,
        }
        .save_png(file);
        let out = Command::new("tesseract")
            .arg(file)
            .arg("stdout")
            .args(["--psm", page_segmentation])
            .stderr(Stdio::null())
            .output()
            .expect("tesseract (scripts/deps.sh --desktop installs it)");
        assert!(
            out.status.success(),
            "tesseract failed on {}",
            file.display()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// `path` with `-inverted` added to its file name.
fn inverted(path: &Path) -> std::path::PathBuf {
    path.with_file_name(format!(
        "{}-inverted.png",
        path.file_stem().unwrap_or_default().to_string_lossy()
    ))
}
