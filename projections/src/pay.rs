//! The pay read model: each org's pay policy, members' leave requests with
//! their days, accruals and carry-over forfeits (balances are their sum),
//! and payroll runs with their lines. Every row comes from the `payroll`
//! and `leave` aggregates' events (a run's lines are recorded in the log
//! when it is drafted), so a rebuild gives the same runs, lines and totals
//! to the minor unit. Erasures drop the notes and comments of the erased
//! person's requests.

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use tokio_postgres::Transaction;
use trackhrs_domain::Aggregate as _;
use trackhrs_domain::erasure::ErasureEvent;
use trackhrs_domain::leave::{Leave, LeaveEvent};
use trackhrs_domain::payroll::compute::{Line, LineKind};
use trackhrs_domain::payroll::{Payroll, PayrollEvent};
use trackhrs_nats::{EventStore, KeyStore, StoreError, TypedCommit, decode_typed};

use crate::error::ApplyError;
use crate::projection::{Committed, Projection};

/// Its name in the catalog.
pub const NAME: &str = "pay";

/// The pay projection.
#[derive(Clone)]
pub struct Pay {
    version: u32,
}

impl Pay {
    /// The projection as catalog version `version`.
    pub fn new(version: u32) -> Self {
        Self { version }
    }
}

/// A stored commit as the pay projection reads it.
#[derive(Debug)]
pub enum PayCommit {
    /// An org's payroll commit (policy, runs).
    Payroll(TypedCommit<PayrollEvent>),
    /// A member's leave commit.
    Leave(TypedCommit<LeaveEvent>),
    /// A person's erasure.
    Erasure(TypedCommit<ErasureEvent>),
}

impl Committed for PayCommit {
    fn stream_sequence(&self) -> u64 {
        match self {
            Self::Payroll(c) => c.stream_sequence,
            Self::Leave(c) => c.stream_sequence,
            Self::Erasure(c) => c.stream_sequence,
        }
    }

    fn org_id(&self) -> &str {
        match self {
            Self::Payroll(c) => &c.org_id,
            Self::Leave(c) => &c.org_id,
            Self::Erasure(c) => &c.org_id,
        }
    }

    fn events(&self) -> usize {
        match self {
            Self::Payroll(c) => c.events.len(),
            Self::Leave(c) => c.events.len(),
            Self::Erasure(c) => c.events.len(),
        }
    }
}

fn kind_name(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Regular => "regular",
        LineKind::Overtime => "overtime",
        LineKind::Leave => "leave",
        LineKind::Holiday => "holiday",
        LineKind::Salary => "salary",
        LineKind::Adjustment => "adjustment",
    }
}

impl Projection for Pay {
    type Commit = PayCommit;

    async fn decode(
        keys: &KeyStore,
        subject: &str,
        sequence: u64,
        bytes: &[u8],
    ) -> Result<PayCommit, StoreError> {
        match subject.split('.').nth(2) {
            Some(Payroll::TYPE) => decode_typed::<Payroll>(keys, subject, sequence, bytes)
                .await
                .map(PayCommit::Payroll),
            Some(Leave::TYPE) => decode_typed::<Leave>(keys, subject, sequence, bytes)
                .await
                .map(PayCommit::Leave),
            _ => decode_typed::<trackhrs_domain::erasure::PersonErasure>(
                keys, subject, sequence, bytes,
            )
            .await
            .map(PayCommit::Erasure),
        }
    }

    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn subjects(&self) -> Vec<String> {
        vec![
            EventStore::subjects_of::<Payroll>(),
            EventStore::subjects_of::<Leave>(),
            crate::erasure::subjects(),
        ]
    }

    async fn migrate(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(&format!(
            "CREATE TABLE {schema}.policy (
                 org_id text PRIMARY KEY,
                 policy jsonb NOT NULL
             );
             CREATE TABLE {schema}.requests (
                 org_id       text NOT NULL,
                 person_id    text NOT NULL,
                 request_id   text NOT NULL,
                 type_id      text NOT NULL,
                 first_day    date NOT NULL,
                 last_day     date NOT NULL,
                 ms           bigint NOT NULL,
                 status       text NOT NULL,
                 note         text,
                 decided_by   text,
                 comment      text,
                 requested_at bigint NOT NULL,
                 PRIMARY KEY (org_id, person_id, request_id)
             );
             CREATE TABLE {schema}.leave_days (
                 org_id     text NOT NULL,
                 person_id  text NOT NULL,
                 request_id text NOT NULL,
                 day        date NOT NULL,
                 ms         bigint NOT NULL,
                 PRIMARY KEY (org_id, person_id, request_id, day)
             );
             CREATE INDEX ON {schema}.leave_days (org_id, day);
             CREATE TABLE {schema}.accruals (
                 org_id    text NOT NULL,
                 person_id text NOT NULL,
                 type_id   text NOT NULL,
                 boundary  date NOT NULL,
                 ms        bigint NOT NULL,
                 PRIMARY KEY (org_id, person_id, type_id, boundary)
             );
             CREATE TABLE {schema}.forfeits (
                 org_id    text NOT NULL,
                 person_id text NOT NULL,
                 type_id   text NOT NULL,
                 year      integer NOT NULL,
                 ms        bigint NOT NULL,
                 PRIMARY KEY (org_id, person_id, type_id, year)
             );
             CREATE TABLE {schema}.runs (
                 org_id       text NOT NULL,
                 first_day    date NOT NULL,
                 last_day     date NOT NULL,
                 status       text NOT NULL,
                 draft        integer NOT NULL,
                 missing      jsonb NOT NULL,
                 total_minor  bigint NOT NULL,
                 members      integer NOT NULL,
                 drafted_at   bigint NOT NULL,
                 finalized_at bigint,
                 PRIMARY KEY (org_id, first_day)
             );
             CREATE TABLE {schema}.lines (
                 org_id       text NOT NULL,
                 first_day    date NOT NULL,
                 line_no      integer NOT NULL,
                 person_id    text NOT NULL,
                 kind         text NOT NULL,
                 leave_type   text,
                 corrects     date,
                 ms           bigint NOT NULL,
                 days         bigint NOT NULL,
                 rate_minor   bigint NOT NULL,
                 percent      integer NOT NULL,
                 amount_minor bigint NOT NULL,
                 PRIMARY KEY (org_id, first_day, line_no)
             );
             CREATE INDEX ON {schema}.lines (org_id, person_id);"
        ))
        .await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        schema: &str,
        batch: &[PayCommit],
    ) -> Result<(), ApplyError> {
        // Each org's policy is read once and written once per batch.
        let mut policies: HashMap<&str, (Payroll, u64)> = HashMap::new();
        for commit in batch {
            match commit {
                PayCommit::Payroll(c) => apply_payroll(tx, schema, c, &mut policies).await?,
                PayCommit::Leave(c) => apply_leave(tx, schema, c).await?,
                PayCommit::Erasure(c) => {
                    for person in crate::erasure::erased(c) {
                        tx.execute(
                            &format!(
                                "UPDATE {schema}.requests SET note = NULL, comment = NULL \
                                 WHERE org_id = $1 AND person_id = $2"
                            ),
                            &[&c.org_id, &person],
                        )
                        .await?;
                    }
                }
            }
        }
        for (org, (state, sequence)) in policies {
            let json = serde_json::to_value(&state.policy).map_err(|e| ApplyError::Poison {
                stream_sequence: sequence,
                reason: format!("policy: {e}"),
            })?;
            tx.execute(
                &format!(
                    "INSERT INTO {schema}.policy (org_id, policy) VALUES ($1, $2) \
                     ON CONFLICT (org_id) DO UPDATE SET policy = EXCLUDED.policy"
                ),
                &[&org, &json],
            )
            .await?;
        }
        Ok(())
    }
}

/// Micro- to milliseconds.
fn millis(micros: i64) -> i64 {
    micros / 1000
}

/// A payroll commit: runs written, policy events applied to the org's
/// policy in `policies` (written at the end of the batch).
async fn apply_payroll<'a>(
    tx: &Transaction<'_>,
    schema: &str,
    commit: &'a TypedCommit<PayrollEvent>,
    policies: &mut HashMap<&'a str, (Payroll, u64)>,
) -> Result<(), ApplyError> {
    let org = commit.org_id.as_str();
    let at = millis(commit.recorded_at_micros);
    for event in &commit.events {
        match event {
            PayrollEvent::RunDrafted {
                period,
                draft,
                lines,
                missing,
                ..
            } => {
                write_run(tx, schema, commit, period, *draft, lines, missing).await?;
            }
            PayrollEvent::RunFinalized { first, .. } => {
                tx.execute(
                    &format!(
                        "UPDATE {schema}.runs SET status = 'finalized', finalized_at = $3 \
                         WHERE org_id = $1 AND first_day = $2"
                    ),
                    &[&org, first, &at],
                )
                .await?;
            }
            policy_event => {
                if !policies.contains_key(org) {
                    let current = policy(tx, schema, org).await?;
                    policies.insert(
                        org,
                        (
                            Payroll {
                                policy: current,
                                ..Payroll::default()
                            },
                            commit.stream_sequence,
                        ),
                    );
                }
                if let Some((state, sequence)) = policies.get_mut(org) {
                    state.apply(policy_event);
                    *sequence = commit.stream_sequence;
                }
            }
        }
    }
    Ok(())
}

/// A drafted run: its row and its lines (those of an earlier draft go).
async fn write_run(
    tx: &Transaction<'_>,
    schema: &str,
    commit: &TypedCommit<PayrollEvent>,
    period: &trackhrs_domain::payroll::schedule::Period,
    draft: u32,
    lines: &[Line],
    missing: &[trackhrs_domain::payroll::Missing],
) -> Result<(), ApplyError> {
    let (org, first, last) = (commit.org_id.as_str(), period.first, period.last);
    let (at, sequence) = (millis(commit.recorded_at_micros), commit.stream_sequence);
    let total: i64 = lines.iter().map(|l| l.amount_minor).sum();
    let members = lines
        .iter()
        .map(|l| &l.member)
        .collect::<BTreeSet<_>>()
        .len() as i32;
    let missing = serde_json::to_value(missing).map_err(|e| ApplyError::Poison {
        stream_sequence: sequence,
        reason: format!("missing: {e}"),
    })?;
    tx.execute(
        &format!(
            "INSERT INTO {schema}.runs (org_id, first_day, last_day, status, draft, missing, \
             total_minor, members, drafted_at) VALUES ($1, $2, $3, 'draft', $4, $5, $6, $7, $8) \
             ON CONFLICT (org_id, first_day) DO UPDATE SET last_day = EXCLUDED.last_day, \
             status = 'draft', draft = EXCLUDED.draft, missing = EXCLUDED.missing, \
             total_minor = EXCLUDED.total_minor, members = EXCLUDED.members, \
             drafted_at = EXCLUDED.drafted_at"
        ),
        &[
            &org,
            &first,
            &last,
            &(draft as i32),
            &missing,
            &total,
            &members,
            &at,
        ],
    )
    .await?;
    tx.execute(
        &format!("DELETE FROM {schema}.lines WHERE org_id = $1 AND first_day = $2"),
        &[&org, &first],
    )
    .await?;
    let numbers: Vec<i32> = (0..lines.len() as i32).collect();
    let people: Vec<&str> = lines.iter().map(|l| l.member.as_str()).collect();
    let kinds: Vec<&str> = lines.iter().map(|l| kind_name(l.kind)).collect();
    let types: Vec<Option<&str>> = lines
        .iter()
        .map(|l| l.leave_type.as_ref().map(|t| t.as_str()))
        .collect();
    let corrects: Vec<Option<NaiveDate>> = lines.iter().map(|l| l.corrects).collect();
    let ms: Vec<i64> = lines.iter().map(|l| l.ms).collect();
    let days: Vec<i64> = lines.iter().map(|l| l.days).collect();
    let rates: Vec<i64> = lines.iter().map(|l| l.rate_minor).collect();
    let percents: Vec<i32> = lines.iter().map(|l| l.percent as i32).collect();
    let amounts: Vec<i64> = lines.iter().map(|l| l.amount_minor).collect();
    tx.execute(
        &format!(
            "INSERT INTO {schema}.lines (org_id, first_day, line_no, person_id, kind, leave_type, \
             corrects, ms, days, rate_minor, percent, amount_minor) \
             SELECT $1, $2, * FROM unnest($3::integer[], $4::text[], $5::text[], $6::text[], \
             $7::date[], $8::bigint[], $9::bigint[], $10::bigint[], $11::integer[], $12::bigint[])"
        ),
        &[
            &org, &first, &numbers, &people, &kinds, &types, &corrects, &ms, &days, &rates,
            &percents, &amounts,
        ],
    )
    .await?;
    Ok(())
}

async fn apply_leave(
    tx: &Transaction<'_>,
    schema: &str,
    commit: &TypedCommit<LeaveEvent>,
) -> Result<(), ApplyError> {
    let (org, person) = (commit.org_id.as_str(), commit.aggregate_id.as_str());
    let at = millis(commit.recorded_at_micros);
    let status = |id: &str, status: &'static str, by: Option<&str>, comment: Option<&str>| {
        let sql = format!(
            "UPDATE {schema}.requests SET status = $4, decided_by = coalesce($5, decided_by), \
             comment = coalesce($6, comment) \
             WHERE org_id = $1 AND person_id = $2 AND request_id = $3"
        );
        let (id, by, comment) = (
            id.to_owned(),
            by.map(str::to_owned),
            comment.map(str::to_owned),
        );
        async move {
            tx.execute(&sql, &[&org, &person, &id, &status, &by, &comment])
                .await
        }
    };
    for event in &commit.events {
        match event {
            LeaveEvent::LeaveRequested {
                id,
                leave_type,
                days,
                note,
                ..
            } => {
                let (Some(first), Some(last)) = (days.keys().next(), days.keys().next_back())
                else {
                    continue;
                };
                let ms: i64 = days.values().sum();
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.requests (org_id, person_id, request_id, type_id, \
                         first_day, last_day, ms, status, note, requested_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)"
                    ),
                    &[
                        &org,
                        &person,
                        &id.as_str(),
                        &leave_type.as_str(),
                        first,
                        last,
                        &ms,
                        &note.as_ref().and_then(|n| n.value()),
                        &at,
                    ],
                )
                .await?;
                let dates: Vec<NaiveDate> = days.keys().copied().collect();
                let amounts: Vec<i64> = days.values().copied().collect();
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.leave_days (org_id, person_id, request_id, day, ms) \
                         SELECT $1, $2, $3, * FROM unnest($4::date[], $5::bigint[])"
                    ),
                    &[&org, &person, &id.as_str(), &dates, &amounts],
                )
                .await?;
            }
            LeaveEvent::LeaveApproved { id, by } => {
                status(id.as_str(), "approved", Some(by.as_str()), None).await?;
            }
            LeaveEvent::LeaveDenied { id, by, comment } => {
                let comment = comment.as_ref().and_then(|c| c.value());
                status(id.as_str(), "denied", Some(by.as_str()), comment).await?;
            }
            LeaveEvent::LeaveCancelled { id } => {
                status(id.as_str(), "cancelled", None, None).await?;
            }
            LeaveEvent::LeaveAccrued {
                leave_type,
                boundary,
                ms,
                ..
            } => {
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.accruals (org_id, person_id, type_id, boundary, ms) \
                         VALUES ($1, $2, $3, $4, $5)"
                    ),
                    &[&org, &person, &leave_type.as_str(), boundary, ms],
                )
                .await?;
            }
            LeaveEvent::LeaveForfeited {
                leave_type,
                year,
                ms,
                ..
            } => {
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.forfeits (org_id, person_id, type_id, year, ms) \
                         VALUES ($1, $2, $3, $4, $5)"
                    ),
                    &[&org, &person, &leave_type.as_str(), year, ms],
                )
                .await?;
            }
        }
    }
    Ok(())
}

mod queries;
pub use queries::*;
