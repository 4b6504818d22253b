//! The organization directory: organizations with their settings, members
//! and devices, from the `Organization` aggregate's events. The
//! administration queries read it.
//!
//! Events arrive typed (upcast, personal data opened); a value whose key was
//! erased arrives as `None` and is stored as NULL.

use tokio_postgres::{Client, Transaction};
use trackhrs_domain::organization::{OrgEvent, Organization};
use trackhrs_nats::{EventStore, KeyStore, StoreError, TypedCommit, decode_typed};

use crate::erasure::{self, WithErasures};
use crate::error::ApplyError;
use crate::projection::Projection;

/// The directory projection at a catalog version.
#[derive(Debug, Clone, Copy)]
pub struct Directory {
    version: u32,
}

impl Directory {
    /// The directory at catalog `version` (1 on a new database; a rebuild
    /// registers the next).
    pub fn new(version: u32) -> Self {
        Self { version }
    }
}

/// Its name in the catalog.
pub const NAME: &str = "org_directory";

impl Projection for Directory {
    type Commit = WithErasures<TypedCommit<OrgEvent>>;

    async fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<Self::Commit, StoreError> {
        erasure::decode(keys, subject, sequence, bytes, async || {
            decode_typed::<Organization>(keys, subject, sequence, bytes).await
        })
        .await
    }

    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        vec![
            EventStore::subjects_of::<Organization>(),
            erasure::subjects(),
        ]
    }

    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!(
            "CREATE TABLE {schema}.organizations (
                 org_id         text PRIMARY KEY,
                 name           text NOT NULL,
                 seats          integer NOT NULL,
                 timezone       text NOT NULL DEFAULT 'UTC',
                 work_week      text[] NOT NULL
                                DEFAULT ARRAY['monday','tuesday','wednesday','thursday','friday'],
                 capture_titles boolean NOT NULL DEFAULT true,
                 capture_urls   boolean NOT NULL DEFAULT false,
                 position       bigint NOT NULL
             );
             CREATE TABLE {schema}.members (
                 org_id    text NOT NULL,
                 person_id text NOT NULL,
                 email     text,
                 name      text,
                 role      text NOT NULL,
                 active    boolean NOT NULL,
                 position  bigint NOT NULL,
                 PRIMARY KEY (org_id, person_id)
             );
             CREATE TABLE {schema}.devices (
                 org_id    text NOT NULL,
                 device_id text NOT NULL,
                 person_id text NOT NULL,
                 name      text,
                 revoked   boolean NOT NULL,
                 position  bigint NOT NULL,
                 PRIMARY KEY (org_id, device_id)
             );
             CREATE INDEX ON {schema}.devices (org_id, person_id);"
        ))
        .await
    }

    /// One statement per event: organization events are rare (a handful per
    /// member per year), so batching them buys nothing.
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[Self::Commit],
    ) -> Result<(), ApplyError> {
        for commit in batch {
            match commit {
                WithErasures::Own(commit) => {
                    let org = commit.org_id.as_str();
                    let position = commit.stream_sequence as i64;
                    for event in &commit.events {
                        apply_event(tx, schema, org, position, event).await?;
                    }
                }
                WithErasures::Erasure(commit) => {
                    for person in erasure::erased(commit) {
                        erase(tx, schema, &commit.org_id, person).await?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Drops an erased person's name and e-mail, and their devices' names.
async fn erase(
    tx: &Transaction<'_>,
    schema: &str,
    org: &str,
    person: &str,
) -> Result<(), ApplyError> {
    tx.execute(
        &format!(
            "UPDATE {schema}.members SET email = NULL, name = NULL \
             WHERE org_id = $1 AND person_id = $2"
        ),
        &[&org, &person],
    )
    .await?;
    tx.execute(
        &format!("UPDATE {schema}.devices SET name = NULL WHERE org_id = $1 AND person_id = $2"),
        &[&org, &person],
    )
    .await?;
    Ok(())
}

async fn apply_event(
    tx: &Transaction<'_>,
    schema: &str,
    org: &str,
    position: i64,
    event: &OrgEvent,
) -> Result<(), ApplyError> {
    match event {
        OrgEvent::OrganizationCreated {
            name,
            owner,
            owner_email,
            owner_name,
            seats,
        } => {
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.organizations (org_id, name, seats, position) \
                     VALUES ($1, $2, $3, $4)"
                ),
                &[&org, name, &(*seats as i32), &position],
            )
            .await?;
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.members (org_id, person_id, email, name, role, active, position) \
                     VALUES ($1, $2, $3, $4, 'owner', true, $5)"
                ),
                &[
                    &org,
                    &owner.as_str(),
                    &owner_email.value(),
                    &owner_name.value(),
                    &position,
                ],
            )
            .await?;
        }
        OrgEvent::MemberInvited {
            member,
            email,
            name,
            role,
        } => {
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.members (org_id, person_id, email, name, role, active, position) \
                     VALUES ($1, $2, $3, $4, $5, true, $6)"
                ),
                &[
                    &org,
                    &member.as_str(),
                    &email.value(),
                    &name.as_ref().and_then(|n| n.value()),
                    &role.name(),
                    &position,
                ],
            )
            .await?;
        }
        OrgEvent::SeatsChanged { seats } => {
            tx.execute(
                &format!(
                    "UPDATE {schema}.organizations SET seats = $2, position = $3 WHERE org_id = $1"
                ),
                &[&org, &(*seats as i32), &position],
            )
            .await?;
        }
        OrgEvent::MemberRoleChanged { member, role } => {
            member_update(
                tx,
                schema,
                (org, position),
                member.as_str(),
                Some(role.name()),
                None,
            )
            .await?;
        }
        OrgEvent::MemberDeactivated { member } => {
            member_update(
                tx,
                schema,
                (org, position),
                member.as_str(),
                None,
                Some(false),
            )
            .await?;
        }
        OrgEvent::MemberReactivated { member } => {
            member_update(
                tx,
                schema,
                (org, position),
                member.as_str(),
                None,
                Some(true),
            )
            .await?;
        }
        OrgEvent::SettingsChanged { settings } => {
            let days: Vec<&str> = settings.work_week.iter().map(|d| d.name()).collect();
            tx.execute(
                &format!(
                    "UPDATE {schema}.organizations SET timezone = $2, work_week = $3, \
                     capture_titles = $4, capture_urls = $5, position = $6 WHERE org_id = $1"
                ),
                &[
                    &org,
                    &settings.timezone,
                    &days,
                    &settings.capture_titles,
                    &settings.capture_urls,
                    &position,
                ],
            )
            .await?;
        }
        OrgEvent::DeviceEnrolled {
            device,
            member,
            name,
        } => {
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.devices (org_id, device_id, person_id, name, revoked, position) \
                     VALUES ($1, $2, $3, $4, false, $5)"
                ),
                &[
                    &org,
                    &device.as_str(),
                    &member.as_str(),
                    &name.value(),
                    &position,
                ],
            )
            .await?;
        }
        OrgEvent::DeviceRevoked { device } => {
            tx.execute(
                &format!(
                    "UPDATE {schema}.devices SET revoked = true, position = $3 \
                     WHERE org_id = $1 AND device_id = $2"
                ),
                &[&org, &device.as_str(), &position],
            )
            .await?;
        }
        // Classification rules are the activity projection's business;
        // teams, clients and attribution rules the work projection's.
        OrgEvent::CategoryRulesChanged { .. }
        | OrgEvent::TeamCreated { .. }
        | OrgEvent::TeamManagersChanged { .. }
        | OrgEvent::MemberTeamChanged { .. }
        | OrgEvent::ClientCreated { .. }
        | OrgEvent::AttributionRulesChanged { .. } => {}
    }
    Ok(())
}

/// Sets a member's role and/or active flag (None leaves it as it is).
async fn member_update(
    tx: &Transaction<'_>,
    schema: &str,
    (org, position): (&str, i64),
    member: &str,
    role: Option<&str>,
    active: Option<bool>,
) -> Result<(), ApplyError> {
    tx.execute(
        &format!(
            "UPDATE {schema}.members SET role = coalesce($3, role), \
             active = coalesce($4, active), position = $5 \
             WHERE org_id = $1 AND person_id = $2"
        ),
        &[&org, &member, &role, &active, &position],
    )
    .await?;
    Ok(())
}

/// An organization as the directory shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    /// Organization id.
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Seats bought.
    pub seats: u32,
    /// Members holding a seat.
    pub active_members: u32,
    /// IANA time zone.
    pub timezone: String,
    /// Working days (`monday` ... `sunday`).
    pub work_week: Vec<String>,
    /// Whether the agent may capture titles.
    pub capture_titles: bool,
    /// Whether the agent may capture URLs.
    pub capture_urls: bool,
}

/// A member as the directory shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// Person id.
    pub person_id: String,
    /// E-mail, None when erased.
    pub email: Option<String>,
    /// Name, None when erased or never recorded.
    pub name: Option<String>,
    /// Role name (`owner`, `admin`, ...).
    pub role: String,
    /// Whether they hold a seat.
    pub active: bool,
}

/// A device as the directory shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// Device id.
    pub device_id: String,
    /// Its member.
    pub person_id: String,
    /// Display name, None when erased.
    pub name: Option<String>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// One organization, if the directory has it.
pub async fn organization(
    pg: &Client,
    schema: &str,
    org: &str,
) -> Result<Option<OrgRow>, tokio_postgres::Error> {
    let row = pg
        .query_opt(
            &format!(
                "SELECT o.org_id, o.name, o.seats, \
                 (SELECT count(*) FROM {schema}.members m WHERE m.org_id = o.org_id AND m.active), \
                 o.timezone, o.work_week, o.capture_titles, o.capture_urls \
                 FROM {schema}.organizations o WHERE o.org_id = $1"
            ),
            &[&org],
        )
        .await?;
    Ok(row.map(|r| OrgRow {
        org_id: r.get(0),
        name: r.get(1),
        seats: r.get::<_, i32>(2) as u32,
        active_members: r.get::<_, i64>(3) as u32,
        timezone: r.get(4),
        work_week: r.get(5),
        capture_titles: r.get(6),
        capture_urls: r.get(7),
    }))
}

/// Most rows a page of members or devices holds.
pub const MAX_PAGE: u32 = 1_000;

/// A page of a list ordered by id: the rows after `after`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageOf {
    /// The last id of the previous page (None for the first page).
    pub after: Option<String>,
    /// At most this many rows (1 to [`MAX_PAGE`]).
    pub limit: u32,
}

impl PageOf {
    /// The rows a page holds: `limit` within 1 to [`MAX_PAGE`].
    fn size(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// The rows to ask for: one more than a page, to learn whether more follow.
    fn fetch(&self) -> i64 {
        i64::from(self.size()) + 1
    }
}

/// Rows of one page and the cursor of the next (None on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<T> {
    /// The rows, by id.
    pub rows: Vec<T>,
    /// The `after` of the next page.
    pub next_after: Option<String>,
}

/// Cuts one extra row (asked for to learn whether more follow) off `rows`.
fn listed<T>(mut rows: Vec<T>, page: &PageOf, id: impl Fn(&T) -> &str) -> Listed<T> {
    let limit = page.size() as usize;
    let next_after = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| id(r).to_owned())
    } else {
        None
    };
    Listed { rows, next_after }
}

/// A page of the members of an organization, by person id.
pub async fn members(
    pg: &Client,
    schema: &str,
    org: &str,
    page: &PageOf,
) -> Result<Listed<MemberRow>, tokio_postgres::Error> {
    let fetch = page.fetch();
    let rows = pg
        .query(
            &format!(
                "SELECT person_id, email, name, role, active FROM {schema}.members \
                 WHERE org_id = $1 AND ($2::text IS NULL OR person_id > $2) \
                 ORDER BY person_id LIMIT $3"
            ),
            &[&org, &page.after, &fetch],
        )
        .await?;
    let rows = rows
        .iter()
        .map(|r| MemberRow {
            person_id: r.get(0),
            email: r.get(1),
            name: r.get(2),
            role: r.get(3),
            active: r.get(4),
        })
        .collect();
    Ok(listed(rows, page, |m: &MemberRow| &m.person_id))
}

/// A member's role name and whether they are active.
pub async fn member_role(
    pg: &Client,
    schema: &str,
    org: &str,
    person: &str,
) -> Result<Option<(String, bool)>, tokio_postgres::Error> {
    Ok(pg
        .query_opt(
            &format!(
                "SELECT role, active FROM {schema}.members WHERE org_id = $1 AND person_id = $2"
            ),
            &[&org, &person],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// A page of the devices of an organization, or of one member of it, by
/// device id.
pub async fn devices(
    pg: &Client,
    schema: &str,
    org: &str,
    person: Option<&str>,
    page: &PageOf,
) -> Result<Listed<DeviceRow>, tokio_postgres::Error> {
    let fetch = page.fetch();
    let rows = pg
        .query(
            &format!(
                "SELECT device_id, person_id, name, revoked FROM {schema}.devices \
                 WHERE org_id = $1 AND ($2::text IS NULL OR person_id = $2) \
                 AND ($3::text IS NULL OR device_id > $3) ORDER BY device_id LIMIT $4"
            ),
            &[&org, &person, &page.after, &fetch],
        )
        .await?;
    let rows = rows
        .iter()
        .map(|r| DeviceRow {
            device_id: r.get(0),
            person_id: r.get(1),
            name: r.get(2),
            revoked: r.get(3),
        })
        .collect();
    Ok(listed(rows, page, |d: &DeviceRow| &d.device_id))
}

/// The member a device of the organization belongs to (None when the org has
/// no such device).
pub async fn device_owner(
    pg: &Client,
    schema: &str,
    org: &str,
    device: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(pg
        .query_opt(
            &format!("SELECT person_id FROM {schema}.devices WHERE org_id = $1 AND device_id = $2"),
            &[&org, &device],
        )
        .await?
        .map(|r| r.get(0)))
}
