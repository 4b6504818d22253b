//! nats-server processes: one node, or a 3-node JetStream cluster.
//!
//! A free port is only free until someone binds it, and a test that talked
//! to another test's server would pass or fail for the wrong reasons. So
//! every server gets a unique `server_name`, and it is ready only when the
//! server answering on its port reports that name; when another process
//! holds the port, the start is tried again on a new one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::HarnessError;
use crate::paths::{free_port, nats_server_binary, workspace_root};
use crate::wait::wait_until;

/// Starts tried on fresh ports before giving up, when the port is ours to choose.
const START_ATTEMPTS: usize = 5;

/// Password of the `trackhrs`, `provision` and `admin` users when [`NatsOptions::accounts`] is on.
pub const TEST_PASSWORD: &str = "trackhrs-test-password";

/// How to start a nats-server.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// fsync every write before acknowledging (`sync_interval: always`), the production setting.
    pub sync_always: bool,
    /// Keep JetStream data here instead of a temp dir (dev mode).
    pub store_dir: Option<PathBuf>,
    /// Listen on this port instead of a free one. The start then fails with
    /// [`HarnessError::PortTaken`] instead of moving to another port.
    pub port: Option<u16>,
    /// Use the users and permissions of `infra/nats/accounts.conf` (the
    /// application user may not delete or purge the event log).
    pub accounts: bool,
    /// Serve TLS only, with this CA's server certificate (for `127.0.0.1`).
    pub tls: Option<crate::tls::LocalCa>,
}

/// A running nats-server, killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The unique `server_name` this server reports in its INFO.
    name: String,
    config: PathBuf,
    /// Temp dir holding config and store; removed on drop.
    _tmp: TempDir,
    binary: PathBuf,
    accounts: bool,
    /// The CA certificate clients trust when the server serves TLS.
    ca_file: Option<PathBuf>,
}

impl NatsServer {
    /// Starts a single node on a free port with a temp store.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(NatsOptions::default()).await
    }

    /// Starts a single node with `options`.
    pub async fn start_with(options: NatsOptions) -> Result<Self, HarnessError> {
        let binary = nats_server_binary()?;
        let mut attempt = 1;
        loop {
            let port = options.port.unwrap_or_else(free_port);
            match Self::start_on(port, &options, binary.clone()).await {
                Err(HarnessError::PortTaken { port, detail })
                    if options.port.is_none() && attempt < START_ATTEMPTS =>
                {
                    tracing::debug!(port, %detail, "port taken before nats-server bound it; trying another");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    async fn start_on(
        port: u16,
        options: &NatsOptions,
        binary: PathBuf,
    ) -> Result<Self, HarnessError> {
        let tmp = tempfile::tempdir().map_err(HarnessError::io("create temp dir"))?;
        let store = options
            .store_dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("js"));
        let name = unique_name("n");
        let config = write_config(tmp.path(), &name, port, &store, options, None)?;
        let mut server = Self {
            child: None,
            port,
            name,
            config,
            ca_file: options.tls.as_ref().map(|_| tmp.path().join("ca.pem")),
            _tmp: tmp,
            binary,
            accounts: options.accounts,
        };
        server.spawn()?;
        server.wait_ready().await?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let log =
            std::fs::File::create(self.log_path()).map_err(HarnessError::io("create nats log"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .env("TRACKHRS_NATS_PASSWORD", TEST_PASSWORD)
            .env("TRACKHRS_NATS_ADMIN_PASSWORD", TEST_PASSWORD)
            .env("TRACKHRS_NATS_PROVISION_PASSWORD", TEST_PASSWORD)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(HarnessError::io(format!("spawn {}", self.binary.display())))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until this process serves JetStream on its port. Fails with
    /// [`HarnessError::PortTaken`] when it could not bind the port, or when
    /// another server answers there.
    async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let url = self.url();
        let user = self.accounts.then_some("trackhrs");
        let ca = self.ca_file.clone();
        let (port, name, log) = (self.port, self.name.clone(), self.log_path());
        let child = &mut self.child;
        wait_until(Duration::from_secs(30), || {
            let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let (url, name, log, ca) = (url.clone(), name.clone(), log.clone(), ca.clone());
            async move {
                match exited {
                    Some(status) => Some(Err(exited_early(port, status, &log))),
                    None => ready(&url, user, ca.as_deref(), port, &name).await,
                }
            }
        })
        .await
        .unwrap_or_else(|| Err(HarnessError::NotReady(format!("nats-server on {url}"))))
    }

    fn log_path(&self) -> PathBuf {
        self.config.with_extension("log")
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM file) to trust when it serves TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The unique `server_name` it reports to clients.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's process id while it runs (for measuring its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Connects a client (as the application user when accounts are on),
    /// refusing a server other than this one.
    pub async fn connect(&self) -> Result<async_nats::Client, HarnessError> {
        self.connect_as(self.accounts.then_some("trackhrs")).await
    }

    /// Connects as `provision` (accounts on: may create and update streams
    /// and buckets) or anonymously, refusing a server other than this one.
    pub async fn connect_provisioner(&self) -> Result<async_nats::Client, HarnessError> {
        self.connect_as(self.accounts.then_some("provision")).await
    }

    /// Connects as `admin` (accounts on) or anonymously, refusing a server
    /// other than this one.
    pub async fn connect_admin(&self) -> Result<async_nats::Client, HarnessError> {
        self.connect_as(self.accounts.then_some("admin")).await
    }

    async fn connect_as(&self, user: Option<&str>) -> Result<async_nats::Client, HarnessError> {
        let client = connect(&self.url(), user, self.ca_file.as_deref()).await?;
        ours(&client, self.port, &self.name)?;
        Ok(client)
    }

    /// Kills the server with SIGKILL, as a crash would. Its store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (its clients
    /// know that address). Fails with [`HarnessError::PortTaken`] when
    /// another process took the port while the server was down.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.spawn()?;
        self.wait_ready().await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-node JetStream cluster on one host, every node killed on drop.
pub struct NatsCluster {
    /// The nodes.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes (3 for a real quorum) with `sync_interval: always`.
    pub async fn start(size: usize) -> Result<Self, HarnessError> {
        let binary = nats_server_binary()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(size, &binary).await {
                Err(HarnessError::PortTaken { port, detail }) if attempt < START_ATTEMPTS => {
                    tracing::debug!(port, %detail, "cluster port taken; starting on other ports");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }

    async fn start_once(size: usize, binary: &Path) -> Result<Self, HarnessError> {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<u16> = ports.iter().map(|(_, r)| *r).collect();
        let mut nodes = Vec::with_capacity(size);
        for (i, (port, route_port)) in ports.iter().enumerate() {
            let tmp = tempfile::tempdir().map_err(HarnessError::io("create temp dir"))?;
            let options = NatsOptions {
                sync_always: true,
                ..Default::default()
            };
            let name = unique_name(&format!("n{}", i + 1));
            let config = write_config(
                tmp.path(),
                &name,
                *port,
                &tmp.path().join("js"),
                &options,
                Some((*route_port, &routes)),
            )?;
            let mut node = NatsServer {
                child: None,
                port: *port,
                name,
                config,
                _tmp: tmp,
                binary: binary.to_path_buf(),
                accounts: false,
                ca_file: None,
            };
            node.spawn()?;
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_ready().await?;
        }
        Ok(Self { nodes })
    }

    /// Every node's address, for a client that fails over between them.
    pub fn addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.nodes
            .iter()
            .map(|n| n.url().parse().expect("valid nats url"))
            .collect()
    }
}

fn write_config(
    dir: &Path,
    name: &str,
    port: u16,
    store: &Path,
    options: &NatsOptions,
    cluster: Option<(u16, &[u16])>,
) -> Result<PathBuf, HarnessError> {
    let mut conf = String::new();
    let _ = writeln!(conf, "server_name: {name}");
    let _ = writeln!(conf, "listen: 127.0.0.1:{port}");
    let _ = writeln!(conf, "max_payload: 8MB");
    let _ = writeln!(conf, "jetstream {{");
    let _ = writeln!(conf, "  store_dir: {:?}", store.display().to_string());
    if options.sync_always {
        let _ = writeln!(conf, "  sync_interval: always");
    }
    let _ = writeln!(conf, "}}");
    if let Some((route_port, routes)) = cluster {
        let _ = writeln!(conf, "cluster {{");
        let _ = writeln!(conf, "  name: trackhrs");
        let _ = writeln!(conf, "  listen: 127.0.0.1:{route_port}");
        let routes: Vec<String> = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let _ = writeln!(conf, "  routes: [{}]", routes.join(", "));
        let _ = writeln!(conf, "}}");
    }
    if let Some(ca) = &options.tls {
        let write = |file: &str, pem: &str| {
            std::fs::write(dir.join(file), pem).map_err(HarnessError::io(format!("write {file}")))
        };
        write("ca.pem", &ca.ca_pem)?;
        write("server.pem", &ca.cert_pem)?;
        write("server.key", &ca.key_pem)?;
        let _ = writeln!(conf, "tls {{");
        let _ = writeln!(
            conf,
            "  cert_file: {:?}",
            dir.join("server.pem").display().to_string()
        );
        let _ = writeln!(
            conf,
            "  key_file: {:?}",
            dir.join("server.key").display().to_string()
        );
        let _ = writeln!(conf, "}}");
    }
    if options.accounts {
        // The same users and permissions as production.
        std::fs::copy(
            workspace_root().join("infra/nats/accounts.conf"),
            dir.join("accounts.conf"),
        )
        .map_err(HarnessError::io("copy infra/nats/accounts.conf"))?;
        let _ = writeln!(conf, "include ./accounts.conf");
    }
    let path = dir.join("nats.conf");
    std::fs::write(&path, conf).map_err(HarnessError::io("write nats.conf"))?;
    Ok(path)
}

async fn connect(
    url: &str,
    user: Option<&str>,
    ca: Option<&Path>,
) -> Result<async_nats::Client, HarnessError> {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    if let Some(user) = user {
        options = options.user_and_password(user.into(), TEST_PASSWORD.into());
    }
    if let Some(ca) = ca {
        options = options
            .add_root_certificates(ca.to_owned())
            .require_tls(true);
    }
    options
        .connect(url)
        .await
        .map_err(|e| HarnessError::Failed(format!("connect to {url}: {e}")))
}

/// `prefix` and a random suffix: no two servers on this machine share it.
fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Whether `client` is connected to the server named `name`.
fn ours(client: &async_nats::Client, port: u16, name: &str) -> Result<(), HarnessError> {
    let found = client.server_info().server_name;
    if found == name {
        Ok(())
    } else {
        Err(HarnessError::PortTaken {
            port,
            detail: format!("nats-server {found:?} answers there, not {name:?}"),
        })
    }
}

/// `Some(Ok)` once the server named `name` serves JetStream on `url`,
/// `Some(Err)` when another server answers there, `None` until then.
async fn ready(
    url: &str,
    user: Option<&str>,
    ca: Option<&Path>,
    port: u16,
    name: &str,
) -> Option<Result<(), HarnessError>> {
    let client = connect(url, user, ca).await.ok()?;
    if let Err(e) = ours(&client, port, name) {
        return Some(Err(e));
    }
    let js = async_nats::jetstream::new(client);
    js.query_account().await.ok().map(|_| Ok(()))
}

/// Why a nats-server exited before it was ready, from its log.
fn exited_early(port: u16, status: ExitStatus, log: &Path) -> HarnessError {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    if log.contains("address already in use") {
        // A cluster node also listens on its route port: say which one failed.
        HarnessError::PortTaken {
            port,
            detail: format!("nats-server could not listen: {}", crate::log_tail(&log)),
        }
    } else {
        HarnessError::Failed(format!(
            "nats-server exited ({status}) before it was ready: {}",
            crate::log_tail(&log)
        ))
    }
}
