//! The organization's history for auditors: who did what and when, one row
//! per event of the `Organization` aggregate, newest first, filtered by
//! person and event type.
//!
//! Rows hold ids, event types and facts that name nobody (a role, a seat
//! count, a rules version, the privacy switches); names and e-mail
//! addresses stay in the log, sealed, so erasing a person needs nothing
//! here.

use tokio_postgres::{Client, Transaction};
use trackhrs_domain::DomainEvent;
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_nats::{EventStore, KeyStore, StoreError, TypedCommit, decode_typed};

use crate::error::ApplyError;
use crate::projection::Projection;

/// The history projection at a catalog version.
#[derive(Debug, Clone, Copy)]
pub struct History {
    version: u32,
}

impl History {
    /// The history at catalog `version`.
    pub fn new(version: u32) -> Self {
        Self { version }
    }
}

/// Its name in the catalog.
pub const NAME: &str = "org_history";

/// Most rows one query returns.
pub const MAX_PAGE: u32 = 500;

impl Projection for History {
    type Commit = TypedCommit<OrgEvent>;

    async fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<Self::Commit, StoreError> {
        decode_typed::<Organization>(keys, subject, sequence, bytes).await
    }

    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        vec![EventStore::subjects_of::<Organization>()]
    }

    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!(
            "CREATE TABLE {schema}.entries (
                 org_id      text NOT NULL,
                 position    bigint NOT NULL,
                 idx         integer NOT NULL,
                 recorded_at timestamptz NOT NULL,
                 actor       text NOT NULL,
                 event_type  text NOT NULL,
                 person_id   text,
                 device_id   text,
                 detail      text NOT NULL,
                 PRIMARY KEY (org_id, position, idx)
             );
             CREATE INDEX ON {schema}.entries (org_id, actor, position);
             CREATE INDEX ON {schema}.entries (org_id, person_id, position);"
        ))
        .await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[Self::Commit],
    ) -> Result<(), ApplyError> {
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {schema}.entries \
                 (org_id, position, idx, recorded_at, actor, event_type, person_id, device_id, detail) \
                 VALUES ($1, $2, $3, to_timestamp($4::bigint / 1e6), $5, $6, $7, $8, $9) \
                 ON CONFLICT DO NOTHING"
            ))
            .await?;
        for commit in batch {
            let position = commit.stream_sequence as i64;
            for (idx, event) in commit.events.iter().enumerate() {
                let (person, device, detail) = facts(event);
                tx.execute(
                    &insert,
                    &[
                        &commit.org_id,
                        &position,
                        &(idx as i32),
                        &commit.recorded_at_micros,
                        &commit.actor,
                        &event.event_type(),
                        &person,
                        &device,
                        &detail,
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The member and device an event is about, and what else it says that
/// names nobody.
fn facts(event: &OrgEvent) -> (Option<&str>, Option<&str>, String) {
    match event {
        OrgEvent::OrganizationCreated { owner, seats, .. } => {
            (Some(owner.as_str()), None, format!("seats {seats}"))
        }
        OrgEvent::MemberInvited { member, role, .. }
        | OrgEvent::MemberRoleChanged { member, role } => {
            (Some(member.as_str()), None, format!("role {}", role.name()))
        }
        OrgEvent::SeatsChanged { seats } => (None, None, format!("seats {seats}")),
        OrgEvent::MemberDeactivated { member } | OrgEvent::MemberReactivated { member } => {
            (Some(member.as_str()), None, String::new())
        }
        OrgEvent::SettingsChanged { settings } => (
            None,
            None,
            format!(
                "time zone {}, titles {}, URLs {}",
                settings.timezone,
                if settings.capture_titles { "on" } else { "off" },
                if settings.capture_urls { "on" } else { "off" },
            ),
        ),
        OrgEvent::CategoryRulesChanged { version, rules } => (
            None,
            None,
            format!("rules version {version}, {} rules", rules.len()),
        ),
        OrgEvent::DeviceEnrolled { device, member, .. } => {
            (Some(member.as_str()), Some(device.as_str()), String::new())
        }
        OrgEvent::DeviceRevoked { device } => (None, Some(device.as_str()), String::new()),
        OrgEvent::TeamCreated { team, name } => (None, None, format!("team {team} \"{name}\"")),
        OrgEvent::TeamManagersChanged { team, managers } => (
            None,
            None,
            format!("team {team}, {} managers", managers.len()),
        ),
        OrgEvent::MemberTeamChanged { member, team } => (
            Some(member.as_str()),
            None,
            match team {
                Some(team) => format!("team {team}"),
                None => "no team".to_owned(),
            },
        ),
        OrgEvent::ClientCreated { client, name } => {
            (None, None, format!("client {client} \"{name}\""))
        }
        OrgEvent::AttributionRulesChanged { version, rules } => (
            None,
            None,
            format!("attribution rules version {version}, {} rules", rules.len()),
        ),
    }
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stream sequence of the commit (a page's cursor).
    pub position: u64,
    /// When it was recorded, microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// Who did it, as the log says: `person:<id>` (or `device:<id>`,
    /// `system`).
    pub actor: String,
    /// The event's type (`MemberInvited`, ...).
    pub event_type: String,
    /// The member it is about.
    pub person_id: Option<String>,
    /// The device it is about.
    pub device_id: Option<String>,
    /// What else it says (a role, a seat count, ...).
    pub detail: String,
}

/// Which entries a query wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Entries done by or about this person.
    pub person: Option<String>,
    /// Entries of these event types (all when empty).
    pub event_types: Vec<String>,
    /// Entries recorded before this position (a page's cursor; all when 0).
    pub before: u64,
    /// At most this many (capped at [`MAX_PAGE`]).
    pub limit: u32,
}

/// A [`Filter`]'s person ($3) and event types ($4).
const FILTER: &str = "($3::text IS NULL OR actor = 'person:' || $3 OR person_id = $3) \
                      AND (cardinality($4::text[]) = 0 OR event_type = ANY($4))";

/// What a query selects of an entry, in [`entry`]'s order.
const COLUMNS: &str = "position, (extract(epoch FROM recorded_at) * 1e6)::bigint, actor, \
                       event_type, person_id, device_id, detail";

fn entry(r: &tokio_postgres::Row) -> Entry {
    Entry {
        position: r.get::<_, i64>(0) as u64,
        recorded_at_micros: r.get(1),
        actor: r.get(2),
        event_type: r.get(3),
        person_id: r.get(4),
        device_id: r.get(5),
        detail: r.get(6),
    }
}

/// A page of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Newest first.
    pub entries: Vec<Entry>,
    /// The cursor of the next page ([`Filter::before`]); `None` on the last.
    pub next_before: Option<u64>,
}

/// The organization's entries, newest first. A page holds whole commits:
/// one the limit would cut is completed (the page then holds more than the
/// limit) or, when others precede it, left for the next page.
pub async fn entries(
    pg: &Client,
    schema: &str,
    org: &str,
    filter: &Filter,
) -> Result<Page, tokio_postgres::Error> {
    let before = if filter.before == 0 {
        i64::MAX
    } else {
        filter.before as i64
    };
    let limit = i64::from(filter.limit.clamp(1, MAX_PAGE));
    let rows = pg
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {schema}.entries \
                 WHERE org_id = $1 AND position < $2 \
                 AND {FILTER} \
                 ORDER BY position DESC, idx DESC LIMIT $5::bigint + 1"
            ),
            &[&org, &before, &filter.person, &filter.event_types, &limit],
        )
        .await?;
    let mut entries: Vec<Entry> = rows.iter().map(entry).collect();
    // One row more than the page tells whether another page follows, and
    // whether the page's last commit goes on in it.
    let Some(next) = entries.get(limit as usize).map(|e| e.position) else {
        return Ok(Page {
            entries,
            next_before: None,
        });
    };
    entries.truncate(limit as usize);
    if entries.iter().any(|e| e.position != next) {
        entries.retain(|e| e.position != next);
    } else {
        // The page is one commit bigger than the limit: all of it.
        entries = entries_of(pg, schema, org, filter, next).await?;
    }
    let next_before = entries.last().map(|e| e.position);
    Ok(Page {
        entries,
        next_before,
    })
}

/// Every matching entry of the commit at `position`.
async fn entries_of(
    pg: &Client,
    schema: &str,
    org: &str,
    filter: &Filter,
    position: u64,
) -> Result<Vec<Entry>, tokio_postgres::Error> {
    let rows = pg
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {schema}.entries \
                 WHERE org_id = $1 AND position = $2 \
                 AND {FILTER} \
                 ORDER BY idx DESC"
            ),
            &[
                &org,
                &(position as i64),
                &filter.person,
                &filter.event_types,
            ],
        )
        .await?;
    Ok(rows.iter().map(entry).collect())
}
