//! What the user works on, polled from the desktop: the active window's
//! application and title, and how long the user has been idle. Behind a
//! trait so other platforms' back-ends fit; the X11 back-end is here.

use std::time::Duration;

use x11rb::connection::Connection;
use x11rb::protocol::screensaver::ConnectionExt as _;
use x11rb::protocol::xproto::{Atom, AtomEnum, ConnectionExt as _, Window};
use x11rb::rust_connection::RustConnection;

use crate::heartbeat::{Event, SpanData};

/// The application named when none can be read (no active window, or a
/// window without `WM_CLASS`), as ActivityWatch's window watcher names it;
/// the gateway refuses spans without an application.
pub const UNKNOWN_APP: &str = "unknown";

/// One look at the desktop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Application: the class part of the active window's `WM_CLASS`
    /// ([`UNKNOWN_APP`] when no window is active or it has no class).
    pub app: String,
    /// The active window's title (`_NET_WM_NAME`, else `WM_NAME`).
    pub title: String,
    /// Time since the last keyboard or mouse input.
    pub idle: Duration,
}

impl Observation {
    /// The heartbeat this observation makes at `now_ms`: idle once the user
    /// has been idle for `idle_after` (ActivityWatch's AFK watcher uses 180 s).
    pub fn heartbeat(&self, now_ms: i64, idle_after: Duration) -> Event {
        Event {
            start_ms: now_ms,
            duration_ms: 0,
            data: SpanData {
                app: self.app.clone(),
                title: self.title.clone(),
                url: None,
                active: self.idle < idle_after,
            },
        }
    }
}

/// Why the desktop could not be observed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No connection to the display.
    #[error("cannot connect to the X display: {0}")]
    Connect(#[from] x11rb::errors::ConnectError),
    /// The connection broke.
    #[error("X11 connection: {0}")]
    Connection(#[from] x11rb::errors::ConnectionError),
    /// A request failed.
    #[error("X11 request: {0}")]
    Reply(#[from] x11rb::errors::ReplyError),
}

/// A source of observations.
pub trait Capture {
    /// Looks at the desktop now.
    fn observe(&mut self) -> Result<Observation, CaptureError>;
}

/// The X11 back-end: `_NET_ACTIVE_WINDOW` (falling back to the input focus),
/// `_NET_WM_NAME` then `WM_NAME`, `WM_CLASS`, and the idle time from the
/// MIT-SCREEN-SAVER extension.
pub struct X11Capture {
    conn: RustConnection,
    root: Window,
    net_active_window: Atom,
    net_wm_name: Atom,
    utf8_string: Atom,
}

/// How many parents to climb from the focused window to find the client
/// window that carries `WM_CLASS` (window managers reparent into frames).
const MAX_CLIMB: usize = 8;

impl X11Capture {
    /// Connects to `display` (e.g. `:0`), or to `$DISPLAY` when None.
    pub fn connect(display: Option<&str>) -> Result<Self, CaptureError> {
        let (conn, screen) = x11rb::connect(display)?;
        let root = conn.setup().roots[screen].root;
        let atom = |name: &str| -> Result<Atom, CaptureError> {
            Ok(conn.intern_atom(false, name.as_bytes())?.reply()?.atom)
        };
        let net_active_window = atom("_NET_ACTIVE_WINDOW")?;
        let net_wm_name = atom("_NET_WM_NAME")?;
        let utf8_string = atom("UTF8_STRING")?;
        Ok(Self {
            conn,
            root,
            net_active_window,
            net_wm_name,
            utf8_string,
        })
    }

    fn text(
        &self,
        window: Window,
        property: Atom,
        kind: Atom,
    ) -> Result<Option<String>, CaptureError> {
        let reply = self
            .conn
            .get_property(false, window, property, kind, 0, 4096)?
            .reply()?;
        Ok((reply.value_len > 0).then(|| String::from_utf8_lossy(&reply.value).into_owned()))
    }

    fn active_window(&self) -> Result<Option<Window>, CaptureError> {
        let reply = self
            .conn
            .get_property(
                false,
                self.root,
                self.net_active_window,
                AtomEnum::WINDOW,
                0,
                1,
            )?
            .reply()?;
        if let Some(w) = reply
            .value32()
            .and_then(|mut v| v.next())
            .filter(|w| *w != 0)
        {
            return Ok(Some(w));
        }
        let focus = self.conn.get_input_focus()?.reply()?.focus;
        Ok((focus > 1 && focus != self.root).then_some(focus))
    }

    /// `WM_CLASS` of `window` or its nearest ancestor that has one, with
    /// that window.
    fn class(&self, mut window: Window) -> Result<Option<(Window, String)>, CaptureError> {
        for _ in 0..MAX_CLIMB {
            if let Some(raw) =
                self.text(window, AtomEnum::WM_CLASS.into(), AtomEnum::STRING.into())?
            {
                // "instance\0class\0": the class names the application.
                let mut parts = raw.split('\0').filter(|p| !p.is_empty());
                let instance = parts.next().unwrap_or_default().to_owned();
                let class = parts.next().map_or(instance, str::to_owned);
                return Ok(Some((window, class)));
            }
            let parent = self.conn.query_tree(window)?.reply()?.parent;
            if parent == 0 || parent == self.root {
                break;
            }
            window = parent;
        }
        Ok(None)
    }
}

impl Capture for X11Capture {
    fn observe(&mut self) -> Result<Observation, CaptureError> {
        let idle = Duration::from_millis(u64::from(
            self.conn
                .screensaver_query_info(self.root)?
                .reply()?
                .ms_since_user_input,
        ));
        let Some(window) = self.active_window()? else {
            return Ok(Observation {
                app: UNKNOWN_APP.into(),
                title: String::new(),
                idle,
            });
        };
        let (client, app) = self
            .class(window)?
            .filter(|(_, class)| !class.trim().is_empty())
            .unwrap_or((window, UNKNOWN_APP.into()));
        let title = match self.text(client, self.net_wm_name, self.utf8_string)? {
            Some(t) => t,
            None => self
                .text(client, AtomEnum::WM_NAME.into(), AtomEnum::ANY.into())?
                .unwrap_or_default(),
        };
        Ok(Observation { app, title, idle })
    }
}
