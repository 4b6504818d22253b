//! Running the `trackhrs` binary from its tests.

#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};

/// Runs `trackhrs args` with `env` set, asserting it succeeds.
pub fn trackhrs(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run trackhrs");
    assert!(
        out.status.success(),
        "trackhrs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The NATS and PostgreSQL settings and the key-encryption key of a
/// platform under test.
pub fn platform_env<'a>(nats_url: &'a str, database_url: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("TRACKHRS_NATS_URL", nats_url),
        ("TRACKHRS_DATABASE_URL", database_url),
        ("TRACKHRS_KEK", trackhrs_harness::TEST_KEK),
        ("RUST_LOG", "warn"),
    ]
}

/// Starts the projection worker, `trackhrs projections run`.
pub fn spawn_worker(nats_url: &str, database_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args(["projections", "run"])
        .envs(platform_env(nats_url, database_url))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn trackhrs projections run")
}

/// A channel to the gateway of a `trackhrs dev` listening on `port`, over
/// TLS trusting the local CA it created under `data_dir`, once it answers.
pub async fn dev_channel(data_dir: &std::path::Path, port: u16) -> tonic::transport::Channel {
    let ca = data_dir.join("tls/ca.pem");
    trackhrs_harness::wait_until(std::time::Duration::from_secs(90), || {
        let ca = ca.clone();
        async move {
            let pem = std::fs::read(&ca).ok()?;
            tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
                .ok()?
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                )
                .ok()?
                .connect()
                .await
                .ok()
        }
    })
    .await
    .expect("the gateway of `trackhrs dev` did not come up over TLS")
}

/// A child process stopped on drop (SIGKILL), so a failed assertion leaves
/// no process behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a `trackhrs dev` started by [`spawn_dev`] listens.
pub struct DevPorts {
    /// Its nats-server.
    pub nats: u16,
    /// Its PostgreSQL.
    pub pg: u16,
    /// Its gateway (TLS).
    pub grpc: u16,
    /// Its metrics endpoint.
    pub metrics: u16,
}

/// Starts `trackhrs dev` on free ports with its data under `data_dir`
/// (no key-encryption key given: it makes its own there).
pub fn spawn_dev(data_dir: &std::path::Path) -> (KillOnDrop, DevPorts) {
    use trackhrs_harness::paths::free_port;
    let ports = DevPorts {
        nats: free_port(),
        pg: free_port(),
        grpc: free_port(),
        metrics: free_port(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args([
            "dev",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--nats-port",
            &ports.nats.to_string(),
            "--pg-port",
            &ports.pg.to_string(),
            "--listen",
            &format!("127.0.0.1:{}", ports.grpc),
            "--metrics-listen",
            &format!("127.0.0.1:{}", ports.metrics),
        ])
        .env_remove("TRACKHRS_KEK")
        .env_remove("TRACKHRS_KEK_FILE")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn trackhrs dev");
    (KillOnDrop(child), ports)
}
