//! The revocation policy on its own, against a real nats-server and
//! PostgreSQL: revocations recorded in the log (without the use case that
//! revokes at once, as if its process died after the commit) revoke the
//! credentials they cover, and a deactivation undone before the policy ran
//! takes away only what was issued before it.

use std::time::Duration;

use trackhrs_app::policy::Revocation;
use trackhrs_app::{App, pg_pool};
use trackhrs_domain::Token;
use trackhrs_domain::organization::{OrgCommand, Role};
use trackhrs_harness::{NatsServer, TestDb};
use trackhrs_nats::{EventStore, StoreConfig};
use trackhrs_projections::{Runner, RunnerConfig, Waited, wait_for_position};

struct Setup {
    _nats: NatsServer,
    db: TestDb,
    store: EventStore,
    app: App,
    org: Token,
}

fn t(s: &str) -> Token {
    Token::new(s).unwrap()
}

async fn setup() -> Setup {
    let nats = NatsServer::start().await.unwrap();
    let store = EventStore::provision_and_open(
        nats.connect().await.unwrap(),
        StoreConfig::with_kek(trackhrs_harness::test_kek()),
    )
    .await
    .unwrap();
    let db = TestDb::create().await.unwrap();
    let pool = pg_pool(db.connection_string().parse().unwrap(), 4).unwrap();
    let app = App::open(store.clone(), pool, Default::default())
        .await
        .unwrap();
    let org = t("acme");
    let orgs = app.org_commands();
    orgs.execute(
        &org,
        "test",
        "create",
        OrgCommand::Create {
            name: "Acme".into(),
            owner: t("olive"),
            owner_email: "olive@acme.test".into(),
            owner_name: "Olive".into(),
            seats: 5,
        },
    )
    .await
    .unwrap();
    orgs.execute(
        &org,
        "test",
        "invite-erin",
        OrgCommand::InviteMember {
            actor: t("olive"),
            member: t("erin"),
            email: "erin@acme.test".into(),
            name: "Erin".into(),
            role: Role::Employee,
        },
    )
    .await
    .unwrap();
    Setup {
        _nats: nats,
        db,
        store,
        app,
        org,
    }
}

impl Setup {
    async fn command(&self, command_id: &str, command: OrgCommand) {
        self.app
            .org_commands()
            .execute(&self.org, "test", command_id, command)
            .await
            .unwrap();
    }

    /// A device of `member` with a token.
    async fn device(&self, member: &str, device: &str) -> String {
        self.command(
            &format!("enroll-{device}"),
            OrgCommand::EnrollDevice {
                actor: t(member),
                device: t(device),
                name: "Laptop".into(),
            },
        )
        .await;
        self.app
            .credentials()
            .put_device_token("acme", device, member)
            .await
            .unwrap()
    }

    /// A refresh token of `member`.
    async fn session(&self, member: &str) -> String {
        self.app
            .credentials()
            .issue_session("acme", member, "employee")
            .await
            .unwrap()
            .refresh_token
    }

    /// Runs the policy until it has passed everything stored, then stops it.
    async fn run_policy(&self) {
        let pg: tokio_postgres::Config = self.db.connection_string().parse().unwrap();
        let runner = Runner::new(
            Revocation::new(self.store.clone(), 1),
            self.store.clone(),
            pg,
            RunnerConfig {
                batch_wait: Duration::from_millis(20),
                ..RunnerConfig::default()
            },
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(async {
            let _ = stopped.await;
        }));
        let last = self.store.last_sequence().await.unwrap();
        let client = self.db.connect().await.unwrap();
        let waited = wait_for_position(
            &client,
            trackhrs_app::policy::revocation::NAME,
            last,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        assert!(matches!(waited, Waited::Reached(_)), "{waited:?}");
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    async fn device_works(&self, token: &str) -> bool {
        self.app
            .credentials()
            .authenticate_device(token)
            .await
            .is_ok()
    }

    /// Refresh tokens of `member` not revoked (read without spending one).
    async fn live_sessions(&self, member: &str) -> i64 {
        self.db
            .connect()
            .await
            .unwrap()
            .query_one(
                "SELECT count(*) FROM auth.refresh_tokens \
                 WHERE org_id = 'acme' AND person_id = $1 AND revoked_at IS NULL",
                &[&member],
            )
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_in_the_log_revoke_the_credentials_they_cover() {
    let s = setup().await;
    let erins_laptop = s.device("erin", "erin-laptop").await;
    s.session("erin").await;
    let olives_laptop = s.device("olive", "olive-laptop").await;
    let olives_phone = s.device("olive", "olive-phone").await;
    s.session("olive").await;
    s.command(
        "deactivate-erin",
        OrgCommand::Deactivate {
            actor: t("olive"),
            member: t("erin"),
        },
    )
    .await;
    s.command(
        "revoke-laptop",
        OrgCommand::RevokeDevice {
            actor: t("olive"),
            device: t("olive-laptop"),
        },
    )
    .await;
    assert!(s.device_works(&erins_laptop).await, "revoked too early");
    s.run_policy().await;
    assert!(!s.device_works(&erins_laptop).await);
    assert_eq!(s.live_sessions("erin").await, 0);
    assert!(!s.device_works(&olives_laptop).await);
    // What no event covers stays.
    assert!(s.device_works(&olives_phone).await);
    assert_eq!(s.live_sessions("olive").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivation_undone_before_the_policy_ran_takes_only_what_came_before() {
    let s = setup().await;
    // A session from before the deactivation (on the laptop it was for).
    s.session("erin").await;
    s.command(
        "deactivate-erin",
        OrgCommand::Deactivate {
            actor: t("olive"),
            member: t("erin"),
        },
    )
    .await;
    s.command(
        "reactivate-erin",
        OrgCommand::Reactivate {
            actor: t("olive"),
            member: t("erin"),
        },
    )
    .await;
    s.session("erin").await;
    let laptop = s.device("erin", "erin-laptop").await;
    s.run_policy().await;
    // The old session is gone even so; the one after the reactivation stays.
    assert_eq!(s.live_sessions("erin").await, 1);
    assert!(s.device_works(&laptop).await);
    // Once she is deactivated again, the policy acts.
    s.command(
        "deactivate-erin-again",
        OrgCommand::Deactivate {
            actor: t("olive"),
            member: t("erin"),
        },
    )
    .await;
    s.run_policy().await;
    assert_eq!(s.live_sessions("erin").await, 0);
    assert!(!s.device_works(&laptop).await);
}
