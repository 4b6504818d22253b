//! PostgreSQL for tests and dev mode: a fresh database per test on a reachable
//! server, or a private cluster started with initdb under a temp dir.
//!
//! A private cluster is ready only when the server answering on its port
//! reports its data directory: another test's cluster that took the port
//! first is never mistaken for it, and the start moves to a new port.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio_postgres::NoTls;

use crate::HarnessError;
use crate::paths::{free_port, pg_bin_dir};
use crate::wait::wait_until;

/// Server used for test databases unless `TRACKHRS_TEST_DATABASE_URL` names another.
const DEFAULT_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
/// Starts tried on fresh ports before giving up, when the port is ours to choose.
const START_ATTEMPTS: usize = 5;

/// A private PostgreSQL cluster, stopped when dropped.
pub struct PgServer {
    child: Option<Child>,
    data: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    /// Extra `-c name=value` settings.
    settings: Vec<String>,
    _tmp: Option<TempDir>,
}

/// How the cluster's data is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on: the data must survive a crash (dev mode).
    Durable,
    /// fsync off: throwaway test data, faster.
    Throwaway,
}

impl PgServer {
    /// Starts a throwaway cluster in a temp dir on a free port.
    pub async fn start_private() -> Result<Self, HarnessError> {
        Self::start_private_with(Durability::Throwaway, &[]).await
    }

    /// Starts a cluster in a temp dir on a free port with extra server
    /// settings (`name=value`, as for `postgres -c`).
    pub async fn start_private_with(
        durability: Durability,
        settings: &[&str],
    ) -> Result<Self, HarnessError> {
        let tmp = tempfile::tempdir().map_err(HarnessError::io("create temp dir"))?;
        Self::start_private_in(tmp, durability, settings).await
    }

    /// A throwaway cluster on a free port that also accepts TLS, serving
    /// `cert_pem` with `key_pem` (clients choose with `sslmode`).
    pub async fn start_private_tls(cert_pem: &str, key_pem: &str) -> Result<Self, HarnessError> {
        let tmp = tempfile::tempdir().map_err(HarnessError::io("create temp dir"))?;
        let cert = tmp.path().join("server.crt");
        let key = tmp.path().join("server.key");
        std::fs::write(&cert, cert_pem).map_err(HarnessError::io("write the TLS certificate"))?;
        std::fs::write(&key, key_pem).map_err(HarnessError::io("write the TLS key"))?;
        // PostgreSQL refuses a key others may read.
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(HarnessError::io("chmod the TLS key"))?;
        if let Some((uid, gid)) = unprivileged_user()? {
            for file in [&cert, &key] {
                std::os::unix::fs::chown(file, Some(uid), Some(gid))
                    .map_err(HarnessError::io("chown the TLS files"))?;
            }
        }
        let settings = [
            "ssl=on".to_owned(),
            format!("ssl_cert_file={}", cert.display()),
            format!("ssl_key_file={}", key.display()),
        ];
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        Self::start_private_in(tmp, Durability::Throwaway, &settings).await
    }

    async fn start_private_in(
        tmp: TempDir,
        durability: Durability,
        settings: &[&str],
    ) -> Result<Self, HarnessError> {
        let data = tmp.path().join("pgdata");
        let mut attempt = 1;
        let mut server = loop {
            match Self::start_with(&data, free_port(), durability, settings).await {
                Err(HarnessError::PortTaken { port, detail }) if attempt < START_ATTEMPTS => {
                    tracing::debug!(port, %detail, "port taken before PostgreSQL bound it; trying another");
                    attempt += 1;
                }
                started => break started?,
            }
        };
        server._tmp = Some(tmp);
        Ok(server)
    }

    /// Starts (initialising on first use) a cluster whose data lives in `data`.
    /// Fails with [`HarnessError::PortTaken`] when another process holds `port`.
    pub async fn start_in(
        data: &Path,
        port: u16,
        durability: Durability,
    ) -> Result<Self, HarnessError> {
        Self::start_with(data, port, durability, &[]).await
    }

    async fn start_with(
        data: &Path,
        port: u16,
        durability: Durability,
        settings: &[&str],
    ) -> Result<Self, HarnessError> {
        let bin = pg_bin_dir()?;
        let run_as = unprivileged_user()?;
        let parent = data.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(HarnessError::io("create pg parent dir"))?;
        if let Some((uid, gid)) = run_as {
            // PostgreSQL refuses to run as root: hand its folders to the service user.
            std::os::unix::fs::chown(parent, Some(uid), Some(gid))
                .map_err(HarnessError::io("chown pg parent dir"))?;
        }
        if !data.join("PG_VERSION").exists() {
            let out = as_user(Command::new(bin.join("initdb")), run_as)
                .current_dir(parent)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(data)
                .output()
                .map_err(HarnessError::io("run initdb"))?;
            if !out.status.success() {
                return Err(HarnessError::Failed(format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        let mut server = Self {
            child: None,
            data: data.to_path_buf(),
            port,
            bin,
            run_as,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            _tmp: None,
        };
        server.spawn(durability)?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Waits until this cluster accepts connections on its port. Fails with
    /// [`HarnessError::PortTaken`] when it could not bind the port, or when
    /// another server answers there.
    async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let conn = self.connection_string("postgres");
        let port = self.port;
        // PostgreSQL reports the data directory as given, symlinks and all.
        let data =
            std::fs::canonicalize(&self.data).map_err(HarnessError::io("resolve pg data dir"))?;
        let log = self.log_path();
        let child = &mut self.child;
        wait_until(Duration::from_secs(30), || {
            let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let (conn, data, log) = (conn.clone(), data.clone(), log.clone());
            async move {
                match exited {
                    Some(status) => Some(Err(exited_early(port, status, &log))),
                    None => ready(&conn, port, &data).await,
                }
            }
        })
        .await
        .unwrap_or_else(|| Err(HarnessError::NotReady(format!("PostgreSQL on port {port}"))))
    }

    fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    fn spawn(&mut self, durability: Durability) -> Result<(), HarnessError> {
        let log =
            std::fs::File::create(self.log_path()).map_err(HarnessError::io("create pg log"))?;
        let mut cmd = as_user(Command::new(self.bin.join("postgres")), self.run_as);
        cmd.current_dir(&self.data)
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.data)
            .args(["-c", "listen_addresses=127.0.0.1"]);
        if durability == Durability::Throwaway {
            cmd.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
        }
        for setting in &self.settings {
            cmd.args(["-c", setting]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(HarnessError::io("spawn postgres"))?;
        self.child = Some(child);
        Ok(())
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string for `dbname`.
    pub fn connection_string(&self, dbname: &str) -> String {
        Self::connection_string_for(self.port, dbname)
    }

    /// The connection string of a server of ours listening on `port`.
    pub fn connection_string_for(port: u16, dbname: &str) -> String {
        format!("host=127.0.0.1 port={port} user=postgres dbname={dbname}")
    }

    /// Starts the server again after [`PgServer::stop`], on the same data and
    /// port (its clients know that address), and waits until it accepts
    /// connections. Fails with [`HarnessError::PortTaken`] when another
    /// process took the port while the server was down.
    pub async fn restart(&mut self, durability: Durability) -> Result<(), HarnessError> {
        self.stop();
        self.spawn(durability)?;
        self.wait_ready().await
    }

    /// Stops the server: a fast shutdown, then a kill if it lingers.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = as_user(Command::new(self.bin.join("pg_ctl")), self.run_as)
                .current_dir(&self.data)
                .args(["stop", "-m", "fast", "-w", "-t", "10", "-D"])
                .arg(&self.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `Some(Ok)` once the cluster whose data directory is `data` accepts
/// connections on `conn`, `Some(Err)` when another server answers there,
/// `None` until then.
async fn ready(conn: &str, port: u16, data: &Path) -> Option<Result<(), HarnessError>> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await.ok()?;
    tokio::spawn(connection);
    let row = client.query_one("SHOW data_directory", &[]).await.ok()?;
    let found = PathBuf::from(row.get::<_, String>(0));
    if std::fs::canonicalize(&found).is_ok_and(|found| found == data) {
        Some(Ok(()))
    } else {
        Some(Err(HarnessError::PortTaken {
            port,
            detail: format!(
                "the PostgreSQL answering there serves {}, not {}",
                found.display(),
                data.display()
            ),
        }))
    }
}

/// Why PostgreSQL exited before it was ready, from its log.
fn exited_early(port: u16, status: ExitStatus, log: &Path) -> HarnessError {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    if log.to_lowercase().contains("address already in use") {
        HarnessError::PortTaken {
            port,
            detail: "PostgreSQL could not bind it".into(),
        }
    } else {
        HarnessError::Failed(format!(
            "PostgreSQL exited ({status}) before it was ready: {}",
            crate::log_tail(&log)
        ))
    }
}

fn as_user(mut cmd: Command, run_as: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// When running as root, the unprivileged user to run PostgreSQL as
/// (`postgres`, else `trackhrs-pg`, both created by scripts/deps.sh).
fn unprivileged_user() -> Result<Option<(u32, u32)>, HarnessError> {
    if current_uid() != Some(0) {
        return Ok(None);
    }
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(HarnessError::io("read /etc/passwd"))?;
    let entry = |name: &str| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == name {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    entry("postgres")
        .or_else(|| entry("trackhrs-pg"))
        .map(Some)
        .ok_or(HarnessError::Missing {
            what: "an unprivileged user for PostgreSQL",
            hint: "run scripts/deps.sh (creates one) when running as root".into(),
        })
}

/// This process's uid, read from /proc (no unsafe libc call needed).
fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A fresh database for one test, dropped when the handle drops.
pub struct TestDb {
    name: String,
    conn_string: String,
    admin: String,
    /// A private server, when no reachable one was found.
    _server: Option<Arc<PgServer>>,
}

impl TestDb {
    /// Creates a database named `trackhrs_test_<uuid>` on the server of
    /// `TRACKHRS_TEST_DATABASE_URL` (default: postgres on 127.0.0.1:5432),
    /// or, when that is unreachable, on a private cluster of its own.
    pub async fn create() -> Result<Self, HarnessError> {
        let admin =
            std::env::var("TRACKHRS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN.into());
        let reachable = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_postgres::connect(&admin, NoTls),
        )
        .await
        .ok()
        .and_then(Result::ok);
        match reachable {
            Some((client, conn)) => {
                tokio::spawn(conn);
                Self::create_on(&client, admin, None).await
            }
            None => Self::create_private().await,
        }
    }

    /// Creates a database on a private cluster started for this test.
    pub async fn create_private() -> Result<Self, HarnessError> {
        let server = Arc::new(PgServer::start_private().await?);
        let admin = server.connection_string("postgres");
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .map_err(|e| HarnessError::Failed(format!("connect to private PostgreSQL: {e}")))?;
        tokio::spawn(conn);
        Self::create_on(&client, admin, Some(server)).await
    }

    /// Creates a database on `server`, which the caller keeps running (and
    /// may stop and restart, for fault tests) for as long as the database.
    pub async fn create_on_server(server: &PgServer) -> Result<Self, HarnessError> {
        let admin = server.connection_string("postgres");
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .map_err(|e| HarnessError::Failed(format!("connect to PostgreSQL: {e}")))?;
        tokio::spawn(conn);
        Self::create_on(&client, admin, None).await
    }

    async fn create_on(
        client: &tokio_postgres::Client,
        admin: String,
        server: Option<Arc<PgServer>>,
    ) -> Result<Self, HarnessError> {
        let name = format!("trackhrs_test_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| HarnessError::Failed(format!("create database {name}: {e}")))?;
        let mut config: tokio_postgres::Config = admin
            .parse()
            .map_err(|e| HarnessError::Failed(format!("bad connection string: {e}")))?;
        config.dbname(&name);
        let conn_string = connection_string_of(&config);
        Ok(Self {
            name,
            conn_string,
            admin,
            _server: server,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A libpq-style connection string for this database.
    pub fn connection_string(&self) -> &str {
        &self.conn_string
    }

    /// Connects a client (its connection task runs on the current runtime).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, HarnessError> {
        let (client, conn) = tokio_postgres::connect(&self.conn_string, NoTls)
            .await
            .map_err(|e| HarnessError::Failed(format!("connect to {}: {e}", self.name)))?;
        tokio::spawn(conn);
        Ok(client)
    }
}

fn connection_string_of(config: &tokio_postgres::Config) -> String {
    let mut parts = Vec::new();
    if let Some(tokio_postgres::config::Host::Tcp(h)) = config.get_hosts().first() {
        parts.push(format!("host={h}"));
    }
    if let Some(p) = config.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = config.get_user() {
        parts.push(format!("user={u}"));
    }
    if let Some(pw) = config.get_password() {
        parts.push(format!("password={}", String::from_utf8_lossy(pw)));
    }
    if let Some(d) = config.get_dbname() {
        parts.push(format!("dbname={d}"));
    }
    parts.join(" ")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self._server.is_some() {
            // The private server and its data go away with it.
            return;
        }
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop cannot await; a short-lived thread with its own runtime can.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
