//! The nats-server side of the harness: a port that another server holds is
//! reported, and never talked to as if that server were ours.

use trackhrs_harness::{HarnessError, NatsOptions, NatsServer};

fn on_port(port: u16) -> NatsOptions {
    NatsOptions {
        port: Some(port),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_server_is_reported_not_used() {
    let holder = NatsServer::start().await.unwrap();
    match NatsServer::start_with(on_port(holder.port())).await {
        Err(HarnessError::PortTaken { port, .. }) => assert_eq!(port, holder.port()),
        Err(e) => panic!("expected the port to be reported taken, got: {e}"),
        Ok(s) => panic!("{} started on the port {} holds", s.name(), holder.name()),
    }
    let client = holder.connect().await.unwrap();
    assert_eq!(client.server_info().server_name, holder.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_finds_its_port_taken_while_it_was_down() {
    let mut server = NatsServer::start().await.unwrap();
    server.kill();
    // Another test's server takes the port while this one is down: neither a
    // client nor the restart may take it for this one.
    let holder = NatsServer::start_with(on_port(server.port()))
        .await
        .unwrap();
    let connected = server.connect().await;
    assert!(
        matches!(connected, Err(HarnessError::PortTaken { .. })),
        "connected to {} as if it were {}",
        holder.name(),
        server.name()
    );
    let restarted = server.restart().await;
    assert!(
        matches!(restarted, Err(HarnessError::PortTaken { .. })),
        "{restarted:?}"
    );

    // Once the port is free again, the server comes back on it.
    drop(holder);
    server.restart().await.unwrap();
    let client = server.connect().await.unwrap();
    assert_eq!(client.server_info().server_name, server.name());
}
