//! The test-kit: a whole platform per test, assembled as the binary
//! assembles it (`trackhrs-platform`): a real nats-server, a fresh
//! PostgreSQL database, every read model and policy running, and gateway
//! replicas on free ports; with the helpers the end-to-end tests share
//! (sign-up, members, devices, authenticated requests).
//!
//! Only ever a dev-dependency (`tests/tests/layering.rs` checks it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use trackhrs_app::{App, AppConfig};
use trackhrs_harness::{NatsServer, TestDb};
use trackhrs_nats::{EventStore, StoreConfig, provision};
use trackhrs_platform::{Platform as Assembled, ReadModels, Settings, TlsIdentity};
use trackhrs_schemas::agent::v1::agent_session_client::AgentSessionClient;
use trackhrs_schemas::org::v1 as pb;
use trackhrs_schemas::org::v1::identity_client::IdentityClient;
use trackhrs_schemas::org::v1::organizations_client::OrganizationsClient;

/// The password of every account the helpers make.
pub const PASSWORD: &str = "correct horse battery";

/// A platform under test; everything stops when it is dropped.
pub struct Platform {
    /// Its nats-server.
    pub nats: NatsServer,
    /// Its database.
    pub db: TestDb,
    /// An event store of its own (not one of a replica's).
    pub store: EventStore,
    /// The store's configuration.
    pub store_config: StoreConfig,
    /// The gateway replicas.
    pub replicas: Vec<Replica>,
    stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// One gateway process.
pub struct Replica {
    /// Its application layer.
    pub app: Arc<App>,
    /// A channel to it.
    pub channel: Channel,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Replica {
    /// An `Identity` client.
    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    /// An `Organizations` client.
    pub fn orgs(&self) -> OrganizationsClient<Channel> {
        OrganizationsClient::new(self.channel.clone())
    }

    /// An `AgentSession` client.
    pub fn agent(&self) -> AgentSessionClient<Channel> {
        AgentSessionClient::new(self.channel.clone())
    }
}

/// Read models apply at once in tests.
const BATCH_WAIT: Duration = Duration::from_millis(20);

impl Platform {
    /// One replica, default settings.
    pub async fn start() -> Self {
        Self::start_with(AppConfig::default(), 1).await
    }

    /// `replicas` replicas with `config`.
    pub async fn start_with(config: AppConfig, replicas: usize) -> Self {
        Self::start_full(config, replicas, StoreConfig::default()).await
    }

    /// `replicas` replicas with `config`, on a store configured so.
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
        // The tests' KEK unless the configuration names one.
        let store_config = StoreConfig {
            kek: store_config
                .kek
                .or_else(|| Some(trackhrs_harness::test_kek())),
            ..store_config
        };
        let nats = NatsServer::start().await.unwrap();
        let client = nats.connect().await.unwrap();
        provision(&client, &store_config).await.unwrap();
        let store = EventStore::open(client, store_config.clone())
            .await
            .unwrap();
        let read_models = if activity {
            ReadModels::All
        } else {
            ReadModels::AllBut(vec![
                trackhrs_projections::activity::NAME.into(),
                trackhrs_projections::timeline::NAME.into(),
            ])
        };
        let mut platform = Self {
            nats,
            db,
            store,
            store_config,
            replicas: Vec::new(),
            stop: Vec::new(),
        };
        let projections = Settings {
            app: config.clone(),
            pg_pool: 2,
            gateway: None,
            portal: None,
            tls: None,
            gateway_options: Default::default(),
            read_models,
            batch_wait: Some(BATCH_WAIT),
        };
        platform.spawn(projections).await;
        for _ in 0..replicas {
            platform.add_replica(config.clone()).await;
        }
        platform
    }

    /// Assembles a platform with `settings` on this one's servers (its own
    /// NATS connection and caches) and runs it until this one is dropped;
    /// returns its application layer (none for read models only) and its
    /// gateway's address.
    async fn spawn(&mut self, settings: Settings) -> (Option<Arc<App>>, Option<SocketAddr>) {
        let client = self.nats.connect().await.unwrap();
        let store = EventStore::open(client, self.store_config.clone())
            .await
            .unwrap();
        let pg: tokio_postgres::Config = self.db.connection_string().parse().unwrap();
        let assembled = Assembled::build(store, pg, settings).await.unwrap();
        let running = (assembled.app().cloned(), assembled.gateway_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop.push(tx);
        tokio::spawn(assembled.run(async {
            let _ = rx.await;
        }));
        running
    }

    /// Another gateway process on the same NATS and PostgreSQL (its own
    /// NATS connection and event-store caches).
    pub async fn add_replica(&mut self, config: AppConfig) {
        self.add_replica_with(config, Default::default()).await;
    }

    /// Another gateway process, whose gateway serves with `options`.
    pub async fn add_replica_with(
        &mut self,
        config: AppConfig,
        options: trackhrs_platform::GatewayOptions,
    ) {
        let settings = Settings {
            app: config,
            pg_pool: 8,
            gateway: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            portal: Some(portal_dist()),
            tls: None,
            gateway_options: options,
            read_models: ReadModels::None,
            batch_wait: None,
        };
        let (app, addr) = self.spawn(settings).await;
        let addr = addr.expect("a replica has a gateway");
        let app = app.expect("a gateway has an application layer");
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        self.replicas.push(Replica { app, channel, addr });
    }

    /// A gateway replica serving TLS only, with `tls`; returns its address
    /// (clients connect as each test's client would).
    pub async fn add_tls_gateway(&mut self, tls: TlsIdentity) -> SocketAddr {
        let settings = Settings {
            app: AppConfig::default(),
            pg_pool: 8,
            gateway: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            portal: Some(portal_dist()),
            tls: Some(tls),
            gateway_options: Default::default(),
            read_models: ReadModels::None,
            batch_wait: None,
        };
        self.spawn(settings).await.1.expect("a gateway")
    }

    /// The first replica.
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

    /// Signs up `org` with `seats` seats; returns the owner's session once
    /// the directory has it.
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

    /// Enrolls a device of `session`'s member named `name`.
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

/// The built portal of this checkout (`portal/dist`, written by
/// `scripts/deps.sh`), which every replica's gateway serves.
pub fn portal_dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../portal/dist")
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

/// Asserts that `result` failed with `code`; returns the status.
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
