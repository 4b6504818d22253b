//! Real servers for tests, benchmarks and dev mode: nats-server (one node or a
//! 3-node cluster) on free ports with their own store directories, and
//! PostgreSQL (a fresh database on a reachable server, or a private cluster
//! started with initdb). Every process is stopped when its handle drops.
//!
//! Architecture invariant: nothing here is a stand-in. Tests get the same
//! nats-server and PostgreSQL binaries production runs.

pub mod desktop;
pub mod http;
pub mod nats;
pub mod paths;
pub mod pg;
pub mod tls;
pub mod wait;

pub use nats::{NatsCluster, NatsOptions, NatsServer};

/// The key-encryption key of tests (base64, `TRACKHRS_KEK` of the
/// processes they start): fixed, so a store reopened by another process or
/// after a restart unwraps what the first one wrapped. Never used outside
/// tests; `trackhrs dev` generates its own.
pub const TEST_KEK: &str = "VHJhY2tIcnMgdGVzdCBrZXktZW5jcnlwdGlvbiBrZXk=";

/// [`TEST_KEK`] as a keyring.
pub fn test_kek() -> std::sync::Arc<trackhrs_kek::Keyring> {
    std::sync::Arc::new(trackhrs_kek::Keyring::from_text(TEST_KEK).expect("the test KEK parses"))
}
pub use pg::{PgServer, TestDb};
pub use wait::wait_until;

/// What can go wrong starting a server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A binary was not found.
    #[error("{what} not found: {hint}")]
    Missing {
        /// Which binary.
        what: &'static str,
        /// How to get it.
        hint: String,
    },
    /// A server did not become ready in time.
    #[error("{0} did not become ready in time")]
    NotReady(String),
    /// Spawning or preparing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A command ran but failed.
    #[error("{0}")]
    Failed(String),
    /// Another process took the port between choosing it and the server
    /// binding it: the server could not bind it, or another server answers.
    #[error("port {port} is taken: {detail}")]
    PortTaken {
        /// The port.
        port: u16,
        /// What showed it.
        detail: String,
    },
}

/// The last lines of a server's log, on one line, for an error message.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl HarnessError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
