//! The gateway answers standard gRPC health checks, reflecting the event store's reachability.

use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trackhrs_harness::wait_until;

/// Every gRPC service of ours, from the descriptors the gateway serves (so
/// a new service cannot be left out of this test).
fn services() -> Vec<String> {
    use prost::Message;
    let set =
        prost_types::FileDescriptorSet::decode(trackhrs_schemas::FILE_DESCRIPTOR_SET).unwrap();
    let mut names = Vec::new();
    for file in set.file {
        for service in &file.service {
            names.push(format!("{}.{}", file.package(), service.name()));
        }
    }
    assert!(names.len() >= 6, "{names:?}");
    names
}

/// The names health answers for: the server, the event store and each
/// service.
fn names() -> Vec<String> {
    let mut names = vec![
        String::new(),
        trackhrs_gateway::EVENT_STORE_HEALTH.to_owned(),
    ];
    names.extend(services());
    names
}

/// Whether every name reaches `want` in time.
async fn reaches(client: &HealthClient<Channel>, want: ServingStatus) -> bool {
    wait_until(Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            for name in names() {
                let request = HealthCheckRequest { service: name };
                let status = client
                    .clone()
                    .check(request)
                    .await
                    .ok()?
                    .into_inner()
                    .status();
                if status != want {
                    return None;
                }
            }
            Some(())
        }
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_event_store() {
    let mut platform = trackhrs_testkit::Platform::start_with(Default::default(), 1).await;
    let channel = platform.gw().channel.clone();
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
    for service in services()
        .into_iter()
        .chain(["grpc.health.v1.Health".to_owned()])
    {
        assert!(names.contains(&service), "{service} missing from {names:?}");
    }
    // Older clients ask reflection v1alpha.
    let mut alpha =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            channel.clone(),
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let answer = alpha
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(
        format!("{answer:?}").contains("trackhrs.org.v1.Identity"),
        "{answer:?}"
    );
    // The real probe: the gateway's own NATS connection.
    let client = HealthClient::new(channel);
    assert!(reaches(&client, ServingStatus::Serving).await);
    platform.nats.kill();
    assert!(reaches(&client, ServingStatus::NotServing).await);
    platform.nats.restart().await.unwrap();
    assert!(reaches(&client, ServingStatus::Serving).await);
}
