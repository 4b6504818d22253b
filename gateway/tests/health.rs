//! The gateway answers standard gRPC health checks, reflecting the event store's reachability.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trackhrs_harness::wait_until;

async fn reaches(client: &HealthClient<Channel>, want: ServingStatus) -> bool {
    wait_until(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let request = HealthCheckRequest {
                service: trackhrs_gateway::EVENT_STORE_HEALTH.into(),
            };
            let status = client.check(request).await.ok()?.into_inner().status();
            (status == want).then_some(())
        }
    })
    .await
    .is_some()
}

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_event_store() {
    let platform = common::Platform::start_with(Default::default(), 0).await;
    let client = platform.nats.connect().await.unwrap();
    let store = trackhrs_nats::EventStore::open(client, Default::default())
        .await
        .unwrap();
    let pg_config = platform.db.connection_string().parse().unwrap();
    let core = trackhrs_gateway::open(
        trackhrs_commands::CommandHandler::new(store),
        trackhrs_gateway::pool(pg_config, 2).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let probe = up.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(trackhrs_gateway::serve(
        listener,
        core,
        move || probe.load(Ordering::SeqCst),
        async {
            let _ = stopped.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Reflection lists the services, so grpcurl needs no .proto files.
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            channel.clone(),
        );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(
        tonic_reflection::pb::v1::server_reflection_response::MessageResponse::ListServicesResponse(
            list,
        ),
    ) = answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "trackhrs.org.v1.Identity",
        "trackhrs.org.v1.Organizations",
        "trackhrs.activity.v1.Activity",
        "trackhrs.agent.v1.AgentIngest",
        "trackhrs.agent.v1.AgentSession",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
    let client = HealthClient::new(channel);
    assert!(reaches(&client, ServingStatus::Serving).await);
    up.store(false, Ordering::SeqCst);
    assert!(reaches(&client, ServingStatus::NotServing).await);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
