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
