//! The agent to a gateway serving TLS: trusting the gateway's CA it uploads;
//! trusting only the system's roots it is refused with a clear error and
//! keeps its spans; a plaintext client gets nothing from a TLS gateway.

use super::*;
use trackhrs_agent::runner::{AgentError, gateway_endpoint};
use trackhrs_harness::tls::LocalCa;
use trackhrs_platform::TlsIdentity;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_uploads_to_a_tls_gateway_it_trusts_and_is_refused_by_one_it_does_not() {
    let mut platform = Platform::start().await;
    let (owner, device, token) = enrolled(&platform).await;
    let ca = LocalCa::new("TrackHrs test CA", &["localhost", "127.0.0.1"]).unwrap();
    let addr = platform
        .add_tls_gateway(TlsIdentity {
            cert_pem: ca.cert_pem.clone().into_bytes(),
            key_pem: ca.key_pem.clone().into_bytes(),
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let url = format!("https://localhost:{}", addr.port());
    let desktop = BusyDesktop::start(Duration::from_millis(150));
    let agent_on = |name: &str, ca: Option<&Path>| {
        let mut config = AgentConfig::new(url.clone(), token.clone(), dir.path().join(name));
        config.gateway_ca = ca.map(Path::to_owned);
        config.poll = Duration::from_millis(50);
        config.upload_every = Duration::from_millis(200);
        config.sync.base_backoff = Duration::from_millis(50);
        config.sync.max_backoff = Duration::from_millis(300);
        let display = desktop.display.name.clone();
        Agent::start(config, move || X11Capture::connect(Some(&display))).unwrap()
    };

    // Without the CA: the system's roots do not know it.
    let untrusting = agent_on("untrusting.db", None);
    let status = untrusting.status();
    wait_until("a refused TLS handshake", Duration::from_secs(20), || {
        matches!(&status.borrow().upload, UploadState::Retrying { .. })
    })
    .await;
    let UploadState::Retrying { error } = status.borrow().upload.clone() else {
        unreachable!("waited for Retrying")
    };
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error names the certificate: {error}"
    );
    // It goes on capturing; what it captured waits in its outbox.
    tokio::time::sleep(Duration::from_secs(1)).await;
    untrusting.stop(Duration::from_secs(2)).await;
    let waiting = Outbox::open(&dir.path().join("untrusting.db"))
        .unwrap()
        .waiting()
        .unwrap();
    assert!(waiting > 0, "the spans wait in the outbox");
    assert!(
        stored_spans(&platform, &owner.org_id, &device)
            .await
            .is_empty(),
        "nothing reached the log"
    );

    // Trusting the CA: spans arrive over TLS.
    let trusting = agent_on("trusting.db", Some(&ca_file));
    let uploaded = trackhrs_harness::wait_until(Duration::from_secs(20), || async {
        let spans = stored_spans(&platform, &owner.org_id, &device).await;
        (!spans.is_empty()).then_some(spans.len())
    })
    .await;
    trusting.stop(Duration::from_secs(2)).await;
    assert!(uploaded.is_some(), "no span arrived over TLS");

    // A plaintext client gets no answer from the TLS gateway, and the
    // gateway goes on serving TLS.
    let before = platform.last_sequence().await;
    let plain = Channel::from_shared(format!("http://{addr}")).unwrap();
    let refused = match plain.connect().await {
        Err(e) => format!("{e:?}"),
        Ok(channel) => {
            let call = AgentSessionClient::new(channel)
                .get_policy(authed(&token, agent_pb::GetPolicyRequest {}))
                .await;
            format!("{:?}", call.expect_err("a plaintext call to a TLS gateway"))
        }
    };
    assert_eq!(platform.last_sequence().await, before, "{refused}");
    let channel = gateway_endpoint(&url, Some(&ca_file))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AgentSessionClient::new(channel)
        .get_policy(authed(&token, agent_pb::GetPolicyRequest {}))
        .await
        .unwrap();

    // A CA file that holds no certificate, or a CA for a plaintext gateway:
    // refused before anything is sent.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    for (gateway, ca) in [(url.as_str(), &junk), ("http://127.0.0.1:1", &ca_file)] {
        match gateway_endpoint(gateway, Some(ca)) {
            Err(AgentError::GatewayCa { .. }) => {}
            other => panic!("{gateway} with {}: {other:?}", ca.display()),
        }
    }
}
