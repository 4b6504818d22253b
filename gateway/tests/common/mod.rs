//! A whole platform per test: a real nats-server, a fresh PostgreSQL
//! database, the directory projection running, and gateway replicas on free
//! ports.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trackhrs_app::policy::Revocation;
use trackhrs_app::{App, AppConfig};
use trackhrs_harness::{NatsServer, TestDb};
use trackhrs_nats::{EventStore, StoreConfig, provision};
use trackhrs_projections::activity::Activity;
use trackhrs_projections::directory::Directory;
use trackhrs_projections::timeline::Timeline;
use trackhrs_projections::{Projection, Runner, RunnerConfig};
use trackhrs_schemas::agent::v1::agent_session_client::AgentSessionClient;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::identity_client::IdentityClient;
use trackhrs_schemas::org::v1::organizations_client::OrganizationsClient;

pub const PASSWORD: &str = "correct horse battery";

pub struct Platform {
    pub nats: NatsServer,
    pub db: TestDb,
    pub store: EventStore,
    pub store_config: StoreConfig,
    pub replicas: Vec<Replica>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

pub struct Replica {
    pub app: Arc<App>,
    pub channel: Channel,
    pub addr: std::net::SocketAddr,
}

impl Replica {
    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }
    pub fn orgs(&self) -> OrganizationsClient<Channel> {
        OrganizationsClient::new(self.channel.clone())
    }
    pub fn agent(&self) -> AgentSessionClient<Channel> {
        AgentSessionClient::new(self.channel.clone())
    }
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(AppConfig::default(), 1).await
    }

    pub async fn start_with(config: AppConfig, replicas: usize) -> Self {
        Self::start_full(config, replicas, StoreConfig::default()).await
    }

    pub async fn start_full(config: AppConfig, replicas: usize, store_config: StoreConfig) -> Self {
        Self::start_on(
            config,
            replicas,
            store_config,
            TestDb::create().await.unwrap(),
        )
        .await
    }

    /// A platform whose PostgreSQL database is `db`.
    pub async fn start_on(
        config: AppConfig,
        replicas: usize,
        store_config: StoreConfig,
        db: TestDb,
    ) -> Self {
        Self::launch(config, replicas, store_config, db, true).await
    }

    /// A platform whose activity read model is not built (as while it is
    /// built for the first time, or run elsewhere).
    pub async fn start_without_activity() -> Self {
        Self::launch(
            AppConfig::default(),
            1,
            StoreConfig::default(),
            TestDb::create().await.unwrap(),
            false,
        )
        .await
    }

    async fn launch(
        config: AppConfig,
        replicas: usize,
        store_config: StoreConfig,
        db: TestDb,
        activity: bool,
    ) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let client = nats.connect().await.unwrap();
        provision(&client, &store_config).await.unwrap();
        let store = EventStore::open(client, store_config.clone())
            .await
            .unwrap();
        let pg_config: tokio_postgres::Config = db.connection_string().parse().unwrap();
        let mut stop = Vec::new();
        stop.push(spawn_projection(Directory::new(1), &store, &pg_config));
        stop.push(spawn_projection(
            Revocation::new(store.clone(), 1),
            &store,
            &pg_config,
        ));
        if activity {
            stop.push(spawn_projection(Activity::new(1), &store, &pg_config));
            stop.push(spawn_projection(Timeline::new(1), &store, &pg_config));
        }
        let mut platform = Self {
            nats,
            db,
            store,
            store_config,
            replicas: Vec::new(),
            stop,
        };
        for _ in 0..replicas {
            platform.add_replica(config.clone()).await;
        }
        platform
    }

    /// Another gateway process on the same NATS and PostgreSQL (its own
    /// NATS connection and event-store caches).
    pub async fn add_replica(&mut self, config: AppConfig) {
        let client = self.nats.connect().await.unwrap();
        let store = EventStore::open(client, self.store_config.clone())
            .await
            .unwrap();
        let pg_config: tokio_postgres::Config = self.db.connection_string().parse().unwrap();
        let pool = trackhrs_app::pg_pool(pg_config, 8).unwrap();
        let app = Arc::new(App::open(store, pool, config).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop.push(tx);
        tokio::spawn(trackhrs_gateway::serve(listener, app.clone(), async {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        self.replicas.push(Replica { app, channel, addr });
    }

    pub fn gw(&self) -> &Replica {
        &self.replicas[0]
    }

    /// Last sequence of the event stream: unchanged means nothing was written.
    pub async fn last_sequence(&self) -> u64 {
        let js = async_nats::jetstream::new(self.store.client().clone());
        let mut stream = js.get_stream("TRACKHRS_EVENTS").await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    }

    /// Rows in every credential table: unchanged means no credential was written.
    pub async fn credential_rows(&self) -> i64 {
        let pg = self.db.connect().await.unwrap();
        pg.query_one(
            "SELECT (SELECT count(*) FROM auth.accounts) + (SELECT count(*) FROM auth.invitations) \
             + (SELECT count(*) FROM auth.refresh_tokens) + (SELECT count(*) FROM auth.device_tokens)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    }

    /// Waits until the directory read model has applied everything stored.
    pub async fn caught_up(&self) {
        let position = self.last_sequence().await;
        let pg = self.db.connect().await.unwrap();
        let waited = trackhrs_projections::wait_for_position(
            &pg,
            trackhrs_projections::directory::NAME,
            position,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(
            matches!(waited, trackhrs_projections::Waited::Reached(_)),
            "the directory did not reach {position}: {waited:?}"
        );
    }

    pub async fn sign_up(&self, org: &str, seats: u32) -> pb::Session {
        let session = self
            .gw()
            .identity()
            .sign_up(pb::SignUpRequest {
                command_id: format!("sign-up-{org}"),
                org_id: org.into(),
                org_name: format!("Org {org}"),
                owner_name: "Olive Owner".into(),
                owner_email: format!("olive@{org}.test"),
                password: PASSWORD.into(),
                seats,
            })
            .await
            .unwrap()
            .into_inner();
        self.caught_up().await;
        session
    }

    /// Invites a member with `role` and accepts the invitation; returns their session.
    pub async fn member(&self, owner: &pb::Session, name: &str, role: pb::Role) -> pb::Session {
        let org = &owner.org_id;
        let invited = self
            .gw()
            .orgs()
            .invite_member(authed(
                &owner.access_token,
                pb::InviteMemberRequest {
                    command_id: format!("invite-{org}-{name}"),
                    org_id: org.clone(),
                    email: format!("{name}@{org}.test"),
                    name: format!("Person {name}"),
                    role: role as i32,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let session = self
            .gw()
            .identity()
            .accept_invitation(pb::AcceptInvitationRequest {
                org_id: org.clone(),
                invitation_token: invited.invitation_token,
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner();
        self.caught_up().await;
        session
    }

    pub async fn enroll(&self, session: &pb::Session, name: &str) -> pb::EnrollDeviceResponse {
        let enrolled = self
            .gw()
            .orgs()
            .enroll_device(authed(
                &session.access_token,
                pb::EnrollDeviceRequest {
                    command_id: format!(
                        "enroll-{}-{}",
                        session.person_id,
                        name.replace(|c: char| !c.is_ascii_alphanumeric(), "")
                    ),
                    org_id: session.org_id.clone(),
                    name: name.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        self.caught_up().await;
        enrolled
    }

    /// Revokes `device` as `session` and waits for the directory.
    pub async fn revoke(&self, session: &pb::Session, device: &str, command_id: &str) {
        self.gw()
            .orgs()
            .revoke_device(authed(
                &session.access_token,
                pb::RevokeDeviceRequest {
                    command_id: command_id.into(),
                    org_id: session.org_id.clone(),
                    device_id: device.into(),
                },
            ))
            .await
            .unwrap();
        self.caught_up().await;
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Runs `projection` until the returned sender is dropped or used.
fn spawn_projection<P: Projection>(
    projection: P,
    store: &EventStore,
    pg_config: &tokio_postgres::Config,
) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runner = Runner::new(
        projection,
        store.clone(),
        pg_config.clone(),
        RunnerConfig {
            batch_wait: Duration::from_millis(20),
            ..RunnerConfig::default()
        },
    );
    tokio::spawn(runner.run(async {
        let _ = rx.await;
    }));
    tx
}

/// A request carrying `token` as its bearer credential.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    what: &str,
) -> Status {
    match result {
        Ok(ok) => panic!("{what}: expected {code:?}, got success {ok:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {}", status.message());
            status
        }
    }
}
