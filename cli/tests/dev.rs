//! The run command's core, `trackhrs dev`, from a clean data folder: it starts
//! its own nats-server and PostgreSQL, provisions, seeds the demo org, is safe
//! to run twice, and `events tail` shows exactly what was stored.

mod common;

use std::process::Command;

use trackhrs_harness::paths::free_port;

fn trackhrs(args: &[&str]) -> std::process::Output {
    common::trackhrs(args, &[])
}

#[test]
fn dev_starts_seeds_once_and_tail_shows_the_log() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let (nats_port, pg_port, grpc_port) = (free_port(), free_port(), free_port());
    let dev = |_: ()| {
        trackhrs(&[
            "dev",
            "--once",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--nats-port",
            &nats_port.to_string(),
            "--pg-port",
            &pg_port.to_string(),
            "--listen",
            &format!("127.0.0.1:{grpc_port}"),
        ])
    };
    let first = dev(());
    assert!(String::from_utf8_lossy(&first.stdout).contains("TrackHrs is set up"));
    dev(());

    // The embedded nats-server stopped with `dev --once`; start it again on the
    // same data to read what was stored.
    let server = tokio::runtime::Runtime::new().unwrap().block_on(async {
        trackhrs_harness::NatsServer::start_with(trackhrs_harness::NatsOptions {
            store_dir: Some(data_dir.join("nats")),
            ..Default::default()
        })
        .await
        .unwrap()
    });
    // The key-encryption key `dev` created in its data folder opens it.
    let kek = data_dir.join("kek");
    let tail = trackhrs(&[
        "events",
        "tail",
        "--nats-url",
        &server.url(),
        "--kek-file",
        kek.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8(tail.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The org, four invitations, then the demo work: a team, its manager,
    // two members in it, a client, two projects, four tasks, the rules;
    // then its pay policy: currency, pay periods, overtime, three leave
    // types, four holidays, five rates.
    assert_eq!(
        lines.len(),
        5 + 12 + 15,
        "the demo org, its work and its pay, stored once: {lines:#?}"
    );
    assert_eq!(lines[17]["command_id"], "demo-pay-currency");
    assert_eq!(lines[31]["events"][0]["event_type"], "RateSet");
    assert_eq!(lines[31]["events"][0]["aggregate_version"], 15);
    assert_eq!(lines[16]["command_id"], "demo-attribution");
    assert_eq!(
        lines[16]["events"][0]["event_type"],
        "AttributionRulesChanged"
    );
    assert_eq!(lines[0]["command_id"], "demo-create-org");
    assert_eq!(lines[0]["events"][0]["event_type"], "OrganizationCreated");
    assert_eq!(
        lines[0]["events"][0]["payload"]["owner_email"]["v"],
        "olive@acme.test"
    );
    assert_eq!(lines[4]["events"][0]["aggregate_version"], 5);
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["stream_sequence"].as_u64() < w[1]["stream_sequence"].as_u64())
    );
}

/// The value of the sample named `series` (name and labels as printed) on
/// the metrics endpoint at `addr`; 0 when it is not there yet.
async fn scrape(addr: std::net::SocketAddr, series: &str) -> f64 {
    let (status, body) = trackhrs_harness::http::call(addr, "GET", "/metrics", "localhost", "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    body.lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|value| value.trim().parse().ok())
        .next()
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_the_demo_org_over_grpc() {
    use trackhrs_schemas::org::v1 as pb;
    use trackhrs_schemas::org::v1::identity_client::IdentityClient;
    use trackhrs_schemas::org::v1::organizations_client::OrganizationsClient;

    let data = tempfile::tempdir().unwrap();
    let (mut child, ports) = common::spawn_dev(&data.path().join("data"));
    let (grpc_port, metrics_addr): (u16, std::net::SocketAddr) = (
        ports.grpc,
        format!("127.0.0.1:{}", ports.metrics).parse().unwrap(),
    );
    // TLS by default, with the local CA it created in its data folder;
    // plaintext is refused.
    let channel = common::dev_channel(&data.path().join("data"), grpc_port).await;
    let plaintext = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await;
    let manny = || pb::LoginRequest {
        org_id: "acme".into(),
        email: "manny@acme.test".into(),
        password: "trackhrs demo 2026".into(),
    };
    // The log-in that works over TLS (below) fails over plaintext.
    if let Ok(plaintext) = plaintext {
        assert!(
            IdentityClient::new(plaintext).login(manny()).await.is_err(),
            "a plaintext log-in was answered"
        );
    }
    let session = IdentityClient::new(channel.clone())
        .login(manny())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.role, pb::Role::Manager as i32);
    // The operator tools find the local platform without flags (the read
    // models register one after another as `dev` starts: until the
    // directory's is listed).
    let status_now = || {
        Command::new(env!("CARGO_BIN_EXE_trackhrs"))
            .args(["projections", "status"])
            .env("TRACKHRS_DATA_DIR", data.path().join("data"))
            .env_remove("TRACKHRS_NATS_URL")
            .env_remove("TRACKHRS_DATABASE_URL")
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status = status_now();
        let listed = String::from_utf8_lossy(&status.stdout).contains("org_directory");
        if !status.status.success() || listed || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && printed.contains("org_directory"),
        "{status:?}"
    );
    assert!(
        !String::from_utf8_lossy(&status.stderr).contains("NOTICE"),
        "PostgreSQL's notices reached the screen: {status:?}"
    );
    let mut request = tonic::Request::new(pb::ListMembersRequest {
        org_id: "acme".into(),
        min_position: 5,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", session.access_token).parse().unwrap(),
    );
    let members = OrganizationsClient::new(channel.clone())
        .list_members(request)
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 5);
    // The simulated agents' workday reaches the dashboard.
    use trackhrs_schemas::activity::v1 as apb;
    use trackhrs_schemas::activity::v1::activity_client::ActivityClient;
    let today = chrono::Utc::now().date_naive();
    let yesterday = today - chrono::Duration::days(1);
    let dashboard = trackhrs_harness::wait_until(std::time::Duration::from_secs(60), || {
        let mut client = ActivityClient::new(channel.clone());
        let token = session.access_token.clone();
        async move {
            let mut request = tonic::Request::new(apb::GetDashboardRequest {
                org_id: "acme".into(),
                from: yesterday.to_string(),
                to: today.to_string(),
                person_ids: vec![],
                min_position: 0,
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().ok()?);
            let dashboard = client.get_dashboard(request).await.ok()?.into_inner();
            let people: std::collections::BTreeSet<_> =
                dashboard.days.iter().map(|d| d.person_id.clone()).collect();
            (people.len() == 3).then_some(dashboard)
        }
    })
    .await
    .expect("the simulated agents' time did not reach the dashboard");
    let tracked: i64 = dashboard.days.iter().map(|d| d.active_ms + d.idle_ms).sum();
    assert!(tracked > 3 * 3_600_000, "only {tracked} ms tracked");
    assert!(
        dashboard
            .days
            .iter()
            .any(|d| d.categories.iter().any(|c| c.name.starts_with("Work")))
    );
    // Each simulated laptop's raw window timeline reaches the manager too.
    let mut devices_request = tonic::Request::new(pb::ListDevicesRequest {
        org_id: "acme".into(),
        min_position: 0,
        ..Default::default()
    });
    devices_request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", session.access_token).parse().unwrap(),
    );
    let devices = OrganizationsClient::new(channel.clone())
        .list_devices(devices_request)
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devices.len(), 3, "{devices:?}");
    let now_ms = chrono::Utc::now().timestamp_millis();
    for device in &devices {
        let events = trackhrs_harness::wait_until(std::time::Duration::from_secs(60), || {
            let mut client = ActivityClient::new(channel.clone());
            let token = session.access_token.clone();
            let device_id = device.device_id.clone();
            async move {
                let mut request = tonic::Request::new(apb::GetDeviceTimelineRequest {
                    org_id: "acme".into(),
                    device_id,
                    from_unix_ms: now_ms - 24 * 3_600_000,
                    to_unix_ms: now_ms + 60_000,
                    min_position: 0,
                });
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().ok()?);
                let timeline = client.get_device_timeline(request).await.ok()?.into_inner();
                (!timeline.events.is_empty()).then_some(timeline.events)
            }
        })
        .await
        .expect("no raw timeline from a simulated laptop");
        assert!(events.iter().all(|e| e.bucket_type == "currentwindow"));
        // Classified on the server as the dashboards classify.
        assert!(events.iter().all(|e| !e.category.is_empty()), "{events:?}");
        if device.person_id == "erin" {
            assert!(
                events.iter().any(|e| e.category == ["Work", "Programming"]),
                "{events:?}"
            );
        }
    }
    // Operators see it run: the counters move while the agents upload.
    let ingested = scrape(metrics_addr, "trackhrs_spans_ingested_total").await;
    assert!(ingested > 0.0, "no spans counted as ingested");
    let uploads_ok = r#"trackhrs_rpc_requests_total{method="/trackhrs.agent.v1.AgentIngest/UploadBatch",code="Ok"}"#;
    assert!(scrape(metrics_addr, uploads_ok).await > 0.0);
    assert!(
        scrape(
            metrics_addr,
            r#"trackhrs_projection_events_applied_total{projection="activity",version="1"}"#
        )
        .await
            > 0.0
    );
    assert!(scrape(metrics_addr, "trackhrs_store_append_seconds_count").await > 0.0);
    let moved = trackhrs_harness::wait_until(std::time::Duration::from_secs(30), || async {
        (scrape(metrics_addr, "trackhrs_spans_ingested_total").await > ingested).then_some(())
    })
    .await;
    assert!(moved.is_some(), "the ingest counter did not move");
    // SIGTERM stops every role cleanly.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = trackhrs_harness::wait_until(std::time::Duration::from_secs(30), || {
        let exited = child.0.try_wait().unwrap();
        async move { exited }
    })
    .await
    .expect("`trackhrs dev` did not stop on SIGTERM");
    assert!(status.success(), "{status:?}");
}
