//! Every RPC gets a request id (the caller's, or a new one echoed back), and
//! the commits a request causes record it as their causation id, with the
//! caller's flow as their correlation id.

use futures::StreamExt;
use tonic::metadata::MetadataValue;
use trackhrs_nats::DecodedCommit;
use trackhrs_nats::reader::{StartAt, read};
use trackhrs_schemas::org::v1 as pb;
use trackhrs_testkit::*;

/// The commit at stream position `position`.
async fn commit_at(p: &Platform, position: u64) -> DecodedCommit {
    let js = async_nats::jetstream::new(p.store.client().clone());
    let mut log = read(
        &js,
        p.store.keys().clone(),
        &p.store.config().events_stream,
        StartAt::Sequence(position),
        None,
    )
    .await
    .unwrap();
    log.next().await.unwrap().commit.unwrap()
}

fn seats(command_id: &str, seats: u32, token: &str) -> tonic::Request<pb::ChangeSeatsRequest> {
    authed(
        token,
        pb::ChangeSeatsRequest {
            command_id: command_id.into(),
            org_id: "acme".into(),
            seats,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_record_the_request_and_the_flow_that_caused_them() {
    let p = Platform::start().await;
    let owner = p.sign_up("acme", 3).await;

    // The caller names its request and its flow.
    let mut request = seats("seats-4", 4, &owner.access_token);
    let metadata = request.metadata_mut();
    metadata.insert("x-request-id", MetadataValue::from_static("req-1"));
    metadata.insert(
        "x-correlation-id",
        MetadataValue::from_static("onboarding-7"),
    );
    let answer = p.gw().orgs().change_seats(request).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "req-1");
    let commit = commit_at(&p, answer.into_inner().position).await;
    assert_eq!(commit.command_id, "seats-4");
    assert_eq!(
        (commit.causation_id.as_str(), commit.correlation_id.as_str()),
        ("req-1", "onboarding-7")
    );

    // Without ids (or with malformed ones) the gateway makes one, and the
    // flow is the request itself.
    let mut request = seats("seats-5", 5, &owner.access_token);
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("not an id!"));
    let answer = p.gw().orgs().change_seats(request).await.unwrap();
    let id = answer
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "not an id!");
    let commit = commit_at(&p, answer.into_inner().position).await;
    assert_eq!(
        (commit.causation_id.as_str(), commit.correlation_id.as_str()),
        (id.as_str(), id.as_str())
    );
}
