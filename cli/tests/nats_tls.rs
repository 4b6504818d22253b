//! Every subcommand connects to NATS the same way: a comma-separated server
//! list, a user and password (or a credentials file), and TLS trusting a
//! given CA. Against a real nats-server serving TLS only, with the
//! production accounts: `provision` (as the provisioning user), `projections
//! status` and `dev --once` (which used to ignore the user and the list; as
//! the runtime user) all get in; without the CA,
//! or with a wrong password, each is refused with a clear error.

mod common;

use std::process::{Command, Stdio};

use trackhrs_harness::paths::free_port;
use trackhrs_harness::tls::LocalCa;
use trackhrs_harness::{NatsOptions, NatsServer, TestDb};

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trackhrs"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run trackhrs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_connects_with_a_server_list_a_user_and_tls() {
    let ca = LocalCa::new("TrackHrs test CA", &["localhost", "127.0.0.1"]).unwrap();
    let nats = NatsServer::start_with(NatsOptions {
        accounts: true,
        tls: Some(ca),
        ..Default::default()
    })
    .await
    .unwrap();
    let db = TestDb::create().await.unwrap();
    let ca_file = nats.ca_file().unwrap().to_str().unwrap().to_owned();
    // The same server twice: the list is parsed, spaces and all.
    let list = format!("{0}, {0}", nats.url());
    let env = |ca: &str, password: &str| {
        vec![
            ("TRACKHRS_NATS_URL", list.clone()),
            ("TRACKHRS_NATS_USER", "trackhrs".to_owned()),
            ("TRACKHRS_NATS_PASSWORD", password.to_owned()),
            ("TRACKHRS_NATS_CA", ca.to_owned()),
            ("TRACKHRS_DATABASE_URL", db.connection_string().to_owned()),
            ("TRACKHRS_KEK", trackhrs_harness::TEST_KEK.to_owned()),
        ]
    };
    let good = env(&ca_file, trackhrs_harness::nats::TEST_PASSWORD);
    let as_refs = |e: &Vec<(&'static str, String)>| {
        e.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    };
    let call = |args: &[&str], e: &Vec<(&'static str, String)>| {
        let owned = as_refs(e);
        let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(args, &refs)
    };

    // Provisioning as the identity that may create streams; everything else
    // as the runtime, which may not.
    let mut provisioner = good.clone();
    provisioner[1].1 = "provision".to_owned();
    for (args, identity) in [
        (&["provision"][..], &provisioner),
        (&["projections", "status"][..], &good),
    ] {
        let out = call(args, identity);
        assert!(
            out.status.success(),
            "trackhrs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = tempfile::tempdir().unwrap();
    let dev = [
        "dev",
        "--once",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--metrics-listen",
        &format!("127.0.0.1:{}", free_port()),
    ];
    let out = call(&dev, &good);
    assert!(
        out.status.success(),
        "trackhrs dev --once against the TLS server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js = async_nats::jetstream::new(nats.connect_admin().await.unwrap());
    assert!(js.get_stream("TRACKHRS_EVENTS").await.is_ok());

    // Refused: without the CA (the system's roots do not know it), with a
    // wrong password, with a CA file that is not there.
    let junk = data.path().join("none.pem");
    for (what, e, says) in [
        (
            "without the CA",
            env("", trackhrs_harness::nats::TEST_PASSWORD),
            "",
        ),
        ("a wrong password", env(&ca_file, "wrong"), "authorization"),
        (
            "a missing CA file",
            env(
                junk.to_str().unwrap(),
                trackhrs_harness::nats::TEST_PASSWORD,
            ),
            "--nats-ca",
        ),
    ] {
        let e: Vec<_> = e.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let out = call(&["projections", "status"], &e);
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr.contains("cannot connect to nats") || stderr.contains("nats"),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(says), "{what}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_nats_configs_serve_tls_only_to_the_three_identities() {
    let ca = LocalCa::new("TrackHrs test CA", &["localhost", "127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in [
        ("ca.pem", &ca.ca_pem),
        ("server.pem", &ca.cert_pem),
        ("server.key", &ca.key_pem),
    ] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let password = trackhrs_harness::nats::TEST_PASSWORD;
    let server_env = [
        ("TRACKHRS_NATS_PASSWORD", password.to_owned()),
        ("TRACKHRS_NATS_PROVISION_PASSWORD", password.to_owned()),
        ("TRACKHRS_NATS_ADMIN_PASSWORD", password.to_owned()),
        ("TRACKHRS_NATS_TLS_CERT", path("server.pem")),
        ("TRACKHRS_NATS_TLS_KEY", path("server.key")),
        ("TRACKHRS_NATS_TLS_CA", path("ca.pem")),
    ];
    let infra = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/nats");
    let binary = trackhrs_harness::paths::nats_server_binary().unwrap();
    // The cluster's nodes: valid, TLS files and all.
    for node in ["n1", "n2", "n3"] {
        let checked = Command::new(&binary)
            .args(["-t", "-c"])
            .arg(infra.join(format!("cluster/{node}.conf")))
            .envs(server_env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(checked.status.success(), "{node}: {checked:?}");
    }
    // The single node, on free ports and a temp store (its store_dir
    // cannot be overridden by a flag), serves TLS only.
    let single = std::fs::read_to_string(infra.join("single.conf"))
        .unwrap()
        .replace("/var/lib/trackhrs/nats", &path("store"));
    std::fs::write(dir.path().join("single.conf"), single).unwrap();
    std::fs::copy(
        infra.join("accounts.conf"),
        dir.path().join("accounts.conf"),
    )
    .unwrap();
    let port = free_port();
    let _node = common::KillOnDrop(
        Command::new(&binary)
            .arg("-c")
            .arg(dir.path().join("single.conf"))
            .args(["-p", &port.to_string(), "-ms", &free_port().to_string()])
            .envs(server_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("tls://127.0.0.1:{port}");
    let client_env = |user: &str| {
        vec![
            ("TRACKHRS_NATS_URL", url.clone()),
            ("TRACKHRS_NATS_USER", user.to_owned()),
            ("TRACKHRS_NATS_PASSWORD", password.to_owned()),
            ("TRACKHRS_NATS_CA", path("ca.pem")),
            ("TRACKHRS_KEK", trackhrs_harness::TEST_KEK.to_owned()),
        ]
    };
    let up = trackhrs_harness::wait_until(std::time::Duration::from_secs(20), || {
        let url = url.clone();
        let ca = path("ca.pem");
        async move {
            async_nats::ConnectOptions::new()
                .user_and_password("admin".into(), password.into())
                .add_root_certificates(ca.into())
                .require_tls(true)
                .connect(url)
                .await
                .ok()
        }
    })
    .await;
    assert!(up.is_some(), "the single node did not come up");
    let call = |args: &[&str], e: Vec<(&'static str, String)>| {
        let refs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(args, &refs)
    };
    let provisioned = call(&["provision"], client_env("provision"));
    assert!(provisioned.status.success(), "{provisioned:?}");
    let refused = call(&["provision"], client_env("trackhrs"));
    assert!(
        !refused.status.success(),
        "the runtime identity provisioned"
    );
    // Plaintext is refused.
    let plaintext = async_nats::ConnectOptions::new()
        .user_and_password("trackhrs".into(), password.into())
        .connection_timeout(std::time::Duration::from_secs(2))
        .retry_on_initial_connect()
        .max_reconnects(1)
        .connect(format!("nats://127.0.0.1:{port}"))
        .await;
    if let Ok(client) = plaintext {
        assert!(
            client.flush().await.is_err()
                || client.connection_state() != async_nats::connection::State::Connected,
            "a plaintext client got in"
        );
    }
}
