//! The event store: append with optimistic concurrency and idempotent command
//! ids, load through an in-process cache, snapshots and batched direct gets.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, kv};
use async_nats::{Client, HeaderMap};
use prost::Message as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use trackhrs_domain::{Aggregate, DomainEvent, Token};
use trackhrs_schemas::events::v1::{Commit, EventEnvelope};

use crate::codec::{self, decode_commit, event_payload, payload_json, unseal};
use crate::config::{EVENT_SUBJECT_PREFIX, StoreConfig};
use crate::direct;
use crate::error::StoreError;
use crate::keys::{Erasure, KeyStore};

/// Format version of stored snapshots; a snapshot of another format is
/// ignored (and the state replayed from the log). Bump it whenever an
/// aggregate's state gains a field that events fill in, since an older
/// snapshot would load the field empty: 2 added `Organization::rules`.
const SNAPSHOT_FORMAT: u64 = 2;
/// Command ids remembered per aggregate, so a retried command gets its original
/// result even after JetStream's duplicate window has passed.
const RECENT_COMMANDS: usize = 32;
/// Longest command id accepted.
const MAX_COMMAND_ID_LEN: usize = 128;

/// An aggregate's state as of its last commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state. Shared with the state cache: a load copies nothing, and
    /// an append copies the state once to apply its events.
    pub state: Arc<A>,
    /// Number of events applied (0 for an aggregate that does not exist yet).
    pub version: u64,
    /// Stream sequence of the aggregate's last commit (0 when none): the
    /// expected position for the next append.
    pub position: u64,
    /// Version covered by the newest snapshot known to this process.
    snapshot_version: u64,
    /// Commits applied since that snapshot.
    commits_since_snapshot: u64,
    /// The last commits' command ids and results, newest last (shared like
    /// the state).
    recent: Arc<VecDeque<(Arc<str>, Appended)>>,
}

impl<A: Default> Default for Loaded<A> {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            version: 0,
            position: 0,
            snapshot_version: 0,
            commits_since_snapshot: 0,
            recent: Arc::default(),
        }
    }
}

impl Appended {
    /// This original result, handed to a retry of `meta`: refused when the
    /// command id is reused by another actor or for another request.
    pub fn for_retry_of(self, meta: &CommitMeta) -> Result<Appended, StoreError> {
        if self.origin == 0 || self.origin == meta.origin() {
            Ok(Appended {
                duplicate: true,
                ..self
            })
        } else {
            Err(StoreError::CommandIdReused {
                command_id: meta.command_id.clone(),
            })
        }
    }
}

impl<A> Loaded<A> {
    /// The original result of `command_id`, if it is one of this aggregate's
    /// recent commits: a retried command must not be decided again.
    pub fn committed(&self, command_id: &str) -> Option<Appended> {
        self.recent
            .iter()
            .rev()
            .find(|(id, _)| &**id == command_id)
            .map(|(_, a)| Appended {
                duplicate: true,
                ..*a
            })
    }

    fn remember_command(&mut self, command_id: &str, appended: Appended) {
        let recent = Arc::make_mut(&mut self.recent);
        if recent.len() == RECENT_COMMANDS {
            recent.pop_front();
        }
        recent.push_back((command_id.into(), appended));
    }
}

/// Who and what a commit comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitMeta {
    /// The command's id; stored as `Nats-Msg-Id`, so a retried command is stored once.
    pub command_id: String,
    /// Who issued the command.
    pub actor: String,
    /// Shared by every command and event of one business flow.
    pub correlation_id: String,
    /// The command or event that caused this command.
    pub causation_id: String,
    /// When the command was recorded, microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// Digest of what the command asks for (see [`CommitMeta::with_request_digest`]).
    pub request_digest: String,
}

impl CommitMeta {
    /// Metadata of a command that starts its own flow (correlation and causation are itself).
    pub fn new(
        command_id: impl Into<String>,
        actor: impl Into<String>,
        recorded_at_micros: i64,
    ) -> Self {
        let command_id = command_id.into();
        Self {
            correlation_id: command_id.clone(),
            causation_id: command_id.clone(),
            command_id,
            actor: actor.into(),
            recorded_at_micros,
            request_digest: String::new(),
        }
    }

    /// Sets the business flow the command belongs to (`correlation_id`) and
    /// what caused it (`causation_id`: the request or event it answers).
    pub fn with_flow(
        mut self,
        correlation_id: impl Into<String>,
        causation_id: impl Into<String>,
    ) -> Self {
        self.correlation_id = correlation_id.into();
        self.causation_id = causation_id.into();
        self
    }

    /// Sets the digest of what the command asks for. A later command with
    /// the same id is a retry only if it has the same actor and digest;
    /// otherwise the store refuses it with [`StoreError::CommandIdReused`]
    /// instead of handing back another request's result.
    pub fn with_request_digest(mut self, digest: impl Into<String>) -> Self {
        self.request_digest = digest.into();
        self
    }

    /// The origin of this command: who asked for what.
    pub fn origin(&self) -> u64 {
        origin(&self.actor, &self.request_digest)
    }

    fn validate(&self) -> Result<(), StoreError> {
        let ok = !self.command_id.is_empty()
            && self.command_id.len() <= MAX_COMMAND_ID_LEN
            && self
                .command_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if ok {
            Ok(())
        } else {
            Err(StoreError::Encode(format!(
                "command id must be 1 to {MAX_COMMAND_ID_LEN} characters of [A-Za-z0-9-_.:]"
            )))
        }
    }
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Appended {
    /// Stream sequence of the commit.
    pub position: u64,
    /// Aggregate version of its first event.
    pub first_version: u64,
    /// Aggregate version of its last event: the aggregate's version after the command.
    pub last_version: u64,
    /// True when the command id had been stored before: this is the original result.
    pub duplicate: bool,
    /// Digest of the commit's actor and request digest (0: unknown, for
    /// commits and snapshots written before it was recorded).
    #[serde(default)]
    pub origin: u64,
}

/// The event store on JetStream. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    js: jetstream::Context,
    config: StoreConfig,
    keys: KeyStore,
    snapshots: kv::Store,
    /// Group committer, when `group_commit_max` > 1.
    committer: Option<tokio::sync::mpsc::Sender<crate::group::Pending>>,
    /// What the group committer did.
    group_stats: Arc<crate::group::GroupCommitStats>,
    /// Latest known state per aggregate subject. A stale entry is harmless: the
    /// append's expected-sequence check refuses it and the caller reloads fresh.
    states: moka::sync::Cache<String, Arc<dyn Any + Send + Sync>>,
}

/// Stored snapshot: state with personal data sealed, and the position it covers.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    format: u64,
    aggregate_type: String,
    version: u64,
    position: u64,
    recent: VecDeque<(Arc<str>, Appended)>,
    state: Value,
}

impl EventStore {
    /// Opens the store on a provisioned server (see [`crate::provision`]),
    /// after checking that it is provisioned and that the event stream cannot
    /// lose events ([`crate::verify`]). Creates and changes no stream.
    pub async fn open(client: Client, config: StoreConfig) -> Result<Self, StoreError> {
        crate::verify(&client, &config).await?;
        // `timeout` bounds awaited acknowledgements and API requests;
        // `ack_timeout` only acknowledgements nobody awaits.
        let js = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .ack_timeout(config.ack_timeout)
            .build(client.clone());
        let states: moka::sync::Cache<String, Arc<dyn Any + Send + Sync>> =
            moka::sync::Cache::new(config.state_cache_capacity);
        let evict = states.clone();
        // A key change (an erasure) invalidates every decrypted state held here.
        let kek = config.kek.clone().ok_or_else(|| {
            StoreError::Keys(format!(
                "no key-encryption key: {}",
                trackhrs_kek::HOW_TO_SET
            ))
        })?;
        let keys = KeyStore::open(&js, &config.key_bucket, kek, move |_| {
            evict.invalidate_all()
        })
        .await?;
        let snapshots = js
            .get_key_value(&config.snapshot_bucket)
            .await
            .map_err(|e| {
                StoreError::Provision(format!("bucket {}: {e}", config.snapshot_bucket))
            })?;
        let group_stats = Arc::new(crate::group::GroupCommitStats::default());
        let committer = (config.group_commit_max > 1).then(|| {
            crate::group::start(
                client.clone(),
                js.clone(),
                config.group_commit_max,
                config.ack_timeout,
                group_stats.clone(),
            )
        });
        let store = Self {
            inner: Arc::new(Inner {
                committer,
                group_stats,
                client,
                js,
                config,
                keys,
                snapshots,
                states,
            }),
        };
        store.reconcile_erasures().await?;
        Ok(store)
    }

    /// Destroys again the data key of every person the log says was erased
    /// (`PersonErased`, on the `erasure` aggregate's subjects), when the key
    /// bucket still has one: a bucket restored from a backup taken before an
    /// erasure brings the key back. Runs at open, before any read. Returns
    /// how many keys it destroyed.
    pub async fn reconcile_erasures(&self) -> Result<usize, StoreError> {
        use futures::TryStreamExt as _;
        let filter = Self::subjects_of::<trackhrs_domain::erasure::PersonErasure>();
        let stream = self
            .inner
            .js
            .get_stream(&self.inner.config.events_stream)
            .await
            .map_err(StoreError::unavailable)?;
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(&filter)
            .await
            .map_err(StoreError::unavailable)?
            .try_collect()
            .await
            .map_err(StoreError::unavailable)?;
        let mut destroyed = 0;
        for (subject, _) in subjects {
            // Only an id the store could have written: a malformed subject
            // (published around the store) must not stop every open.
            let org = org_of(&subject);
            let Some(person) = subject
                .rsplit('.')
                .next()
                .filter(|p| Token::new(p).is_ok() && Token::new(org).is_ok())
            else {
                tracing::warn!("an erasure subject names no valid org and person id; skipped");
                continue;
            };
            match self.inner.keys.erasure(org, person).await? {
                Erasure::Done => {}
                Erasure::Unmarked => self.inner.keys.erase(org, person).await?,
                Erasure::KeyLeft => {
                    self.inner.keys.erase(org, person).await?;
                    destroyed += 1;
                }
            }
        }
        if destroyed > 0 {
            self.inner.states.invalidate_all();
            tracing::warn!(
                destroyed,
                "data keys of erased people were in the key bucket (restored from a backup?) and were destroyed again"
            );
        }
        Ok(destroyed)
    }

    /// Provisions the streams and buckets (idempotent) and opens the store:
    /// for a process that owns its server (`trackhrs dev`, tests, benches).
    pub async fn provision_and_open(
        client: Client,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        crate::provision(&client, &config).await?;
        Self::open(client, config).await
    }

    /// The NATS client the store uses.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The store's configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Counters of the group committer.
    pub fn group_commit_stats(&self) -> &crate::group::GroupCommitStats {
        &self.inner.group_stats
    }

    /// The personal-data key store.
    pub fn keys(&self) -> &KeyStore {
        &self.inner.keys
    }

    /// The subject of an aggregate instance: `evt.<org>.<type>.<id>`.
    pub fn subject<A: Aggregate>(org: &Token, id: &Token) -> String {
        format!("{EVENT_SUBJECT_PREFIX}.{org}.{}.{id}", A::TYPE)
    }

    /// The subject filter of every aggregate of type `A` in every org
    /// (`evt.*.<type>.*`): what a read model or policy of `A` reads.
    pub fn subjects_of<A: Aggregate>() -> String {
        format!("{EVENT_SUBJECT_PREFIX}.*.{}.*", A::TYPE)
    }

    /// Drops this process's cached state of the aggregate on `subject`, so
    /// the next load reads it from the log (for processes that follow other
    /// writers' commits, e.g. a gateway replica).
    pub fn forget(&self, subject: &str) {
        self.inner.states.invalidate(subject);
    }

    /// The stream sequence of the newest message in the event log.
    pub async fn last_sequence(&self) -> Result<u64, StoreError> {
        let mut stream = self
            .inner
            .js
            .get_stream(&self.inner.config.events_stream)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(stream
            .info()
            .await
            .map_err(StoreError::unavailable)?
            .state
            .last_sequence)
    }

    /// Erases a person from `org`: destroys their data key there, so their
    /// personal data in the org's log reads as erased in every event and
    /// snapshot, here and on every replica.
    pub async fn erase_person(&self, org: &Token, person: &Token) -> Result<(), StoreError> {
        self.inner.keys.erase(org.as_str(), person.as_str()).await?;
        self.inner.states.invalidate_all();
        Ok(())
    }

    /// The aggregate's current state, from the in-process cache when present
    /// (possibly stale: an append from it then conflicts, and the caller
    /// reloads with [`EventStore::load_fresh`]).
    pub async fn load<A: Aggregate>(
        &self,
        org: &Token,
        id: &Token,
    ) -> Result<Loaded<A>, StoreError> {
        let subject = Self::subject::<A>(org, id);
        if let Some(hit) = self.inner.states.get(&subject)
            && let Some(loaded) = hit.downcast_ref::<Loaded<A>>()
        {
            return Ok(loaded.clone());
        }
        self.load_fresh(org, id).await
    }

    /// The aggregate's state read from the store: the newest snapshot, then
    /// every commit after it by batched direct get.
    pub async fn load_fresh<A: Aggregate>(
        &self,
        org: &Token,
        id: &Token,
    ) -> Result<Loaded<A>, StoreError> {
        let subject = Self::subject::<A>(org, id);
        let mut loaded = self.read_snapshot::<A>(&subject).await;
        let messages = direct::subject_after(
            &self.inner.client,
            &self.inner.config.events_stream,
            &subject,
            loaded.position,
            self.inner.config.ack_timeout,
        )
        .await?;
        for msg in messages {
            self.apply_commit(&subject, msg.sequence, &msg.payload, &mut loaded)
                .await?;
        }
        self.maybe_snapshot(&subject, &mut loaded);
        self.remember(&subject, &loaded);
        Ok(loaded)
    }

    /// The original result of `command_id` on an aggregate, found by reading
    /// the aggregate's commits from the log: for retries that come after
    /// [`Loaded::committed`] has forgotten the command and the stream's
    /// duplicate window has passed. Costs a read of the whole subject, so it
    /// is for rare paths only.
    pub async fn find_command<A: Aggregate>(
        &self,
        org: &Token,
        id: &Token,
        command_id: &str,
    ) -> Result<Option<Appended>, StoreError> {
        let subject = Self::subject::<A>(org, id);
        let messages = direct::subject_after(
            &self.inner.client,
            &self.inner.config.events_stream,
            &subject,
            0,
            self.inner.config.ack_timeout,
        )
        .await?;
        for msg in messages {
            let commit = decode_commit(&subject, msg.sequence, &msg.payload)?;
            if commit.command_id == command_id {
                let mut appended = appended_from(&commit, msg.sequence);
                appended.duplicate = true;
                return Ok(Some(appended));
            }
        }
        Ok(None)
    }

    async fn apply_commit<A: Aggregate>(
        &self,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
        loaded: &mut Loaded<A>,
    ) -> Result<(), StoreError> {
        let decode_err = |reason: String| StoreError::Decode {
            subject: subject.to_owned(),
            sequence,
            reason,
        };
        let commit = decode_commit(subject, sequence, bytes)?;
        if commit.aggregate_type != A::TYPE {
            return Err(decode_err(format!(
                "commit of aggregate type {:?} on a {} subject",
                commit.aggregate_type,
                A::TYPE
            )));
        }
        let mut payloads = commit
            .events
            .iter()
            .map(|e| payload_json(subject, sequence, e))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = codec::keys_for(
            &self.inner.keys,
            &commit.org_id,
            &payloads.iter().collect::<Vec<_>>(),
        )
        .await?;
        for (envelope, payload) in commit.events.iter().zip(payloads.iter_mut()) {
            if envelope.aggregate_version != loaded.version + 1 {
                return Err(decode_err(format!(
                    "event version {} follows version {}",
                    envelope.aggregate_version, loaded.version
                )));
            }
            let event = codec::open_event::<A>(envelope, std::mem::take(payload), &keys)
                .map_err(decode_err)?;
            Arc::make_mut(&mut loaded.state).apply(&event);
            loaded.version = envelope.aggregate_version;
        }
        loaded.position = sequence;
        loaded.commits_since_snapshot += 1;
        let mut appended = appended_from(&commit, sequence);
        appended.duplicate = false;
        loaded.remember_command(&commit.command_id, appended);
        Ok(())
    }

    async fn read_snapshot<A: Aggregate>(&self, subject: &str) -> Loaded<A> {
        match self.try_read_snapshot::<A>(subject).await {
            Ok(Some(loaded)) => loaded,
            Ok(None) => Loaded::default(),
            Err(reason) => {
                // Snapshots are an optimisation: on any doubt, replay from the log.
                tracing::warn!(subject, %reason, "ignoring unusable snapshot");
                Loaded::default()
            }
        }
    }

    async fn try_read_snapshot<A: Aggregate>(
        &self,
        subject: &str,
    ) -> Result<Option<Loaded<A>>, String> {
        let Some(bytes) = self
            .inner
            .snapshots
            .get(subject)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let mut snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if snap.format != SNAPSHOT_FORMAT || snap.aggregate_type != A::TYPE {
            return Err(format!(
                "snapshot format {} of {}",
                snap.format, snap.aggregate_type
            ));
        }
        let keys = codec::keys_for(&self.inner.keys, org_of(subject), &[&snap.state])
            .await
            .map_err(|e| e.to_string())?;
        unseal(&mut snap.state, &keys)?;
        let state: Arc<A> = serde_json::from_value(snap.state).map_err(|e| e.to_string())?;
        Ok(Some(Loaded {
            state,
            version: snap.version,
            position: snap.position,
            snapshot_version: snap.version,
            commits_since_snapshot: 0,
            recent: Arc::new(snap.recent),
        }))
    }

    fn remember<A: Aggregate>(&self, subject: &str, loaded: &Loaded<A>) {
        self.inner
            .states
            .insert(subject.to_owned(), Arc::new(loaded.clone()));
    }

    /// Starts writing a snapshot of `loaded` when it is due, and counts it
    /// as written in `loaded` at once: appends that follow before the write
    /// completes do not start another one.
    fn maybe_snapshot<A: Aggregate>(&self, subject: &str, loaded: &mut Loaded<A>) {
        let config = &self.inner.config;
        if loaded.version
            < loaded
                .snapshot_version
                .saturating_add(config.snapshot_every)
            || loaded.commits_since_snapshot < config.snapshot_min_commits
        {
            return;
        }
        loaded.snapshot_version = loaded.version;
        loaded.commits_since_snapshot = 0;
        let store = self.clone();
        let subject = subject.to_owned();
        let snapshot = loaded.clone();
        // Off the command's path: a lost snapshot only costs a longer replay.
        tokio::spawn(async move {
            if let Err(e) = store.write_snapshot(&subject, &snapshot).await {
                tracing::warn!(subject, error = %e, "snapshot not written");
            }
        });
    }

    async fn write_snapshot<A: Aggregate>(
        &self,
        subject: &str,
        loaded: &Loaded<A>,
    ) -> Result<(), StoreError> {
        let mut state =
            serde_json::to_vec(&loaded.state).map_err(|e| StoreError::Encode(e.to_string()))?;
        codec::seal_all(
            &self.inner.keys,
            org_of(subject),
            std::slice::from_mut(&mut state),
        )
        .await?;
        let state: Value =
            serde_json::from_slice(&state).map_err(|e| StoreError::Encode(e.to_string()))?;
        let snap = Snapshot {
            format: SNAPSHOT_FORMAT,
            aggregate_type: A::TYPE.to_owned(),
            version: loaded.version,
            position: loaded.position,
            recent: (*loaded.recent).clone(),
            state,
        };
        let bytes = serde_json::to_vec(&snap).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.inner
            .snapshots
            .put(subject, bytes.into())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    /// Appends the events of one command as one commit, if the aggregate is
    /// still at `current.position`.
    ///
    /// - All events are stored atomically, in one message.
    /// - A command id stored before (a retry) is not stored again: the original
    ///   result comes back with `duplicate: true`.
    /// - If another commit came first, [`StoreError::Conflict`].
    /// - Without an acknowledgement, [`StoreError::Unacknowledged`]: never a false success.
    pub async fn append<A: Aggregate>(
        &self,
        org: &Token,
        id: &Token,
        current: &Loaded<A>,
        events: Vec<A::Event>,
        meta: &CommitMeta,
    ) -> Result<Appended, StoreError> {
        meta.validate()?;
        if let Some(original) = current.committed(&meta.command_id) {
            return original.for_retry_of(meta);
        }
        if events.is_empty() {
            return Err(StoreError::Encode(
                "a commit needs at least one event".into(),
            ));
        }
        let subject = Self::subject::<A>(org, id);
        let mut payloads = events
            .iter()
            .map(event_payload)
            .collect::<Result<Vec<_>, _>>()?;
        codec::seal_all(&self.inner.keys, org.as_str(), &mut payloads).await?;
        let envelopes = events
            .iter()
            .zip(payloads)
            .enumerate()
            .map(|(i, (e, payload))| EventEnvelope {
                event_type: e.event_type().to_owned(),
                schema_version: e.schema_version(),
                aggregate_version: current.version + 1 + i as u64,
                payload,
            })
            .collect();
        let commit = Commit {
            command_id: meta.command_id.clone(),
            org_id: org.to_string(),
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: id.to_string(),
            actor: meta.actor.clone(),
            correlation_id: meta.correlation_id.clone(),
            causation_id: meta.causation_id.clone(),
            recorded_at_micros: meta.recorded_at_micros,
            events: envelopes,
            request_digest: meta.request_digest.clone(),
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id(&subject, &meta.command_id).as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            current.position.to_string().as_str(),
        );
        let started = std::time::Instant::now();
        let ack = self
            .publish(subject.clone(), headers, commit.encode_to_vec().into())
            .await?;
        metrics::histogram!("trackhrs_store_append_seconds")
            .record(started.elapsed().as_secs_f64());
        match ack {
            Ok(ack) if ack.duplicate => {
                self.inner.states.invalidate(&subject);
                self.original_result(&subject, ack.sequence, &meta.command_id)
                    .await?
                    .for_retry_of(meta)
            }
            Ok(ack) => {
                let mut next = current.clone();
                let state = Arc::make_mut(&mut next.state);
                for e in &events {
                    state.apply(e);
                }
                next.version = current.version + events.len() as u64;
                next.position = ack.sequence;
                next.commits_since_snapshot += 1;
                let appended = Appended {
                    position: ack.sequence,
                    first_version: current.version + 1,
                    last_version: next.version,
                    duplicate: false,
                    origin: meta.origin(),
                };
                next.remember_command(&meta.command_id, appended);
                self.maybe_snapshot(&subject, &mut next);
                self.inner.states.insert(subject, Arc::new(next));
                Ok(appended)
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                self.inner.states.invalidate(&subject);
                // Our own earlier attempt may be what came first (its ack was lost).
                let after = direct::subject_after(
                    &self.inner.client,
                    &self.inner.config.events_stream,
                    &subject,
                    current.position,
                    self.inner.config.ack_timeout,
                )
                .await?;
                if after.is_empty() {
                    // Nothing newer is stored, so no other commit came first:
                    // the server's answer cannot be trusted (seen while it was
                    // being killed). The outcome is unknown, not a conflict.
                    return Err(StoreError::Unacknowledged(format!(
                        "{subject}: the server reported a newer commit but holds none"
                    )));
                }
                for msg in after {
                    let commit = decode_commit(&subject, msg.sequence, &msg.payload)?;
                    if commit.command_id == meta.command_id {
                        return appended_from(&commit, msg.sequence).for_retry_of(meta);
                    }
                }
                Err(StoreError::Conflict {
                    subject,
                    expected: current.position,
                })
            }
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded || exceeds_maximum(&e) => {
                Err(StoreError::Encode(format!(
                    "commit on {subject} is too large"
                )))
            }
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => Err(StoreError::Unavailable(
                format!("no stream for {subject}: is the store provisioned?"),
            )),
            Err(e) => {
                self.inner.states.invalidate(&subject);
                Err(StoreError::Unacknowledged(format!("{subject}: {e}")))
            }
        }
    }

    /// Publishes one commit, through the group committer when there is one
    /// and the commit is small enough to gain from sharing a flush.
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<Result<PublishAck, PublishError>, StoreError> {
        let grouped = self
            .inner
            .committer
            .as_ref()
            .filter(|_| payload.len() < crate::group::MAX_GROUPED_BYTES);
        let answer = async {
            let Some(committer) = grouped else {
                // Answered as the committer answers: a refused send is the
                // append's own error (too large, no stream, unacknowledged).
                let sent = self
                    .inner
                    .js
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await;
                return Ok(match sent {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                });
            };
            let (reply, answer) = tokio::sync::oneshot::channel();
            committer
                .send(crate::group::Pending {
                    subject: subject.clone(),
                    headers,
                    payload,
                    reply,
                })
                .await
                .map_err(|_| StoreError::Unavailable("the group committer stopped".into()))?;
            answer.await.map_err(|_| {
                StoreError::Unacknowledged(format!(
                    "{subject}: the group committer dropped the append"
                ))
            })
        };
        // The client and the committer answer within their own timeouts;
        // this bound only guards against either being stuck, so no caller
        // ever waits forever.
        tokio::time::timeout(self.inner.config.ack_timeout * 4, answer)
            .await
            .map_err(|_| StoreError::Unacknowledged(format!("{subject}: no answer in time")))?
    }

    async fn original_result(
        &self,
        subject: &str,
        sequence: u64,
        command_id: &str,
    ) -> Result<Appended, StoreError> {
        let stream = self
            .inner
            .js
            .get_stream_no_info(&self.inner.config.events_stream)
            .await
            .map_err(StoreError::unavailable)?;
        let msg = stream
            .direct_get(sequence)
            .await
            .map_err(StoreError::unavailable)?;
        let commit = decode_commit(subject, sequence, &msg.payload)?;
        if commit.command_id != command_id {
            return Err(StoreError::Decode {
                subject: subject.to_owned(),
                sequence,
                reason: format!(
                    "duplicate acknowledgement points at command {}, not {command_id}",
                    commit.command_id
                ),
            });
        }
        Ok(appended_from(&commit, sequence))
    }
}

/// Whether the server refused a message as larger than the stream allows.
fn exceeds_maximum(e: &PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|s| s.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

fn appended_from(commit: &Commit, sequence: u64) -> Appended {
    Appended {
        position: sequence,
        first_version: commit.events.first().map_or(0, |e| e.aggregate_version),
        last_version: commit.events.last().map_or(0, |e| e.aggregate_version),
        duplicate: true,
        origin: origin(&commit.actor, &commit.request_digest),
    }
}

/// Who asked for what, as 64 bits of SHA-256 over actor and request digest
/// (never 0, which marks an origin not recorded).
fn origin(actor: &str, request_digest: &str) -> u64 {
    let digest = Sha256::digest(format!("{actor}\u{0}{request_digest}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first).max(1)
}

/// The `Nats-Msg-Id` of a command on a subject: command ids are chosen by
/// clients, so the id is scoped to the aggregate (the same id on two
/// aggregates, or in two orgs, is two commands).
fn msg_id(subject: &str, command_id: &str) -> String {
    Sha256::digest(format!("{subject}\u{0}{command_id}").as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The org an event subject (`evt.<org>.<type>.<id>`) belongs to.
fn org_of(subject: &str) -> &str {
    subject.split('.').nth(1).unwrap_or_default()
}
