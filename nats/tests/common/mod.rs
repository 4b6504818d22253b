//! Shared set-up of the event-store integration tests: a real nats-server per test.

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::BoxStream;
use trackhrs_domain::Aggregate as _;
use trackhrs_domain::Token;
use trackhrs_domain::organization::OrgEvent;
use trackhrs_domain::organization::Organization;
use trackhrs_domain::organization::{OrgCommand, Role};
use trackhrs_harness::NatsServer;
use trackhrs_nats::reader::{self, LogItem, StartAt};
use trackhrs_nats::{Appended, CommitMeta, EventStore, Loaded, StoreConfig, StoreError};

pub fn tok(s: &str) -> Token {
    Token::new(s).unwrap()
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

pub fn meta(command_id: &str) -> CommitMeta {
    CommitMeta::new(command_id, "user:test", now_micros())
}

pub async fn open_store(server: &NatsServer) -> EventStore {
    let client = server.connect().await.unwrap();
    EventStore::provision_and_open(client, StoreConfig::with_kek(trackhrs_harness::test_kek()))
        .await
        .unwrap()
}

pub async fn start() -> (NatsServer, EventStore) {
    let server = NatsServer::start().await.unwrap();
    let store = open_store(&server).await;
    (server, store)
}

pub fn create_org(seats: u32) -> OrgCommand {
    OrgCommand::Create {
        name: "Acme".into(),
        owner: tok("owner"),
        owner_email: "olive@acme.test".into(),
        owner_name: "Olive Owner".into(),
        seats,
    }
}

pub fn invite(member: &str) -> OrgCommand {
    OrgCommand::InviteMember {
        actor: tok("owner"),
        member: tok(member),
        email: format!("{member}@acme.test"),
        name: format!("Name of {member}"),
        role: Role::Employee,
    }
}

/// The whole event log from the start, as `events tail` reads it.
pub async fn read_log(store: &EventStore) -> BoxStream<'static, LogItem> {
    let js = async_nats::jetstream::new(store.client().clone());
    reader::read(
        &js,
        store.keys().clone(),
        "TRACKHRS_EVENTS",
        StartAt::Start,
        None,
    )
    .await
    .unwrap()
}

/// Organization `id` of org "acme", read from the store (not the cache).
pub async fn load_org(store: &EventStore, id: &str) -> Loaded<Organization> {
    store.load_fresh(&tok("acme"), &tok(id)).await.unwrap()
}

/// Appends `events` to organization `id` of org "acme" from state `base`.
pub async fn append_org(
    store: &EventStore,
    id: &str,
    base: &Loaded<Organization>,
    events: Vec<OrgEvent>,
    command_id: &str,
) -> Result<Appended, StoreError> {
    store
        .append(&tok("acme"), &tok(id), base, events, &meta(command_id))
        .await
}

/// Decides `cmd` on the org `org` of tenant `acme` and appends it.
pub async fn run_org(
    store: &EventStore,
    cmd: <Organization as trackhrs_domain::Aggregate>::Command,
    command_id: &str,
) {
    let loaded = load_org(store, "org").await;
    let events = loaded.state.handle(cmd).unwrap();
    store
        .append(
            &tok("acme"),
            &tok("org"),
            &loaded,
            events,
            &meta(command_id),
        )
        .await
        .unwrap();
}
