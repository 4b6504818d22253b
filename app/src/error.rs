//! The application's error: what went wrong, as a kind the adapters map to
//! their own codes (the gateway to gRPC statuses in `gateway/src/status.rs`),
//! and a message safe to show the caller. Domain, command, store, credential
//! and query failures are classified here, once.

use std::borrow::Cow;

use trackhrs_commands::CommandError;
use trackhrs_credentials::AuthError;
use trackhrs_domain::activity::ActivityError;
use trackhrs_domain::erasure::ErasureError;
use trackhrs_domain::leave::LeaveError;
use trackhrs_domain::organization::OrgError;
use trackhrs_domain::payroll::PayrollError;
use trackhrs_domain::project::ProjectError;
use trackhrs_domain::timeline::TimelineError;
use trackhrs_domain::timesheet::TimesheetError;
use trackhrs_nats::StoreError;

/// The message for every request that touches another organization, or
/// something in this one the caller may not see (existing or not).
pub const NOT_YOURS: &str = "not allowed in this organization";

/// What kind of failure an [`AppError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input; the message names the field.
    Invalid,
    /// No or bad credentials; the same message whether an account, token or
    /// organization exists or not.
    Unauthenticated,
    /// The caller's role may not do this, or the target is not theirs.
    NotAllowed,
    /// The thing asked for does not exist (and the caller may know that).
    NotFound,
    /// The command id was used for a different request.
    AlreadyExists,
    /// An invariant the aggregate upholds, or a state that forbids this.
    Precondition,
    /// Concurrent changes kept winning; try again.
    Conflict,
    /// Too large, or too many attempts.
    Exhausted,
    /// A store is unreachable, or an outcome is unknown (retrying with the
    /// same command id is safe).
    Unavailable,
    /// A read model did not reach the asked position in time.
    Timeout,
}

/// A failed use case.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    kind: ErrorKind,
    message: Cow<'static, str>,
    retry_after: Option<std::time::Duration>,
}

impl AppError {
    /// An error of `kind` with `message` (shown to the caller: no secrets,
    /// no personal data).
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, telling the caller to try again after `wait` (a
    /// rate limit), not before.
    pub fn retry_after(self, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(wait),
            ..self
        }
    }

    /// How long the caller should wait before trying again, if it should.
    pub fn wait(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// Malformed input: `field: reason`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Invalid, format!("{field}: {reason}"))
    }

    /// The caller may not do or see this.
    pub fn not_allowed(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotAllowed, message)
    }

    /// A state that forbids this.
    pub fn precondition(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Precondition, message)
    }

    /// Not there yet, or unreachable; try again.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Its message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unacknowledged { .. } => Self::unavailable(
                "the event store did not confirm the command; retry with the same command id",
            ),
            StoreError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the organization kept changing; try again",
            ),
            StoreError::CommandIdReused { .. } => Self::new(
                ErrorKind::AlreadyExists,
                "this command id was already used for a different request; choose a new one",
            ),
            StoreError::Erased { .. } => {
                Self::precondition("this person's data was erased; their account cannot change")
            }
            other => {
                tracing::error!(error = %other, "event store failure");
                Self::unavailable("the event store is unavailable; try again")
            }
        }
    }
}

impl From<AuthError> for AppError {
    fn from(error: AuthError) -> Self {
        match &error {
            AuthError::BadToken
            | AuthError::Expired
            | AuthError::Revoked
            | AuthError::BadCredentials => Self::new(ErrorKind::Unauthenticated, error.to_string()),
            AuthError::Throttled { retry_after_secs } => {
                Self::new(ErrorKind::Exhausted, error.to_string())
                    .retry_after(std::time::Duration::from_secs(*retry_after_secs))
            }
            AuthError::LastKey | AuthError::InvitationUsed => Self::precondition(error.to_string()),
            AuthError::Db(e) => {
                // Only the code and message: a constraint's DETAIL would name
                // the e-mail address that collided.
                tracing::error!(
                    code = e.code().map(|c| c.code()),
                    message = e.as_db_error().map(|d| d.message()),
                    "credential store failure"
                );
                Self::unavailable("the credential store is unavailable; try again")
            }
            AuthError::NoKey | AuthError::Pool(_) | AuthError::Internal(_) => {
                tracing::error!(error = %error, "credential store failure");
                Self::unavailable("the credential store is unavailable; try again")
            }
        }
    }
}

/// A read-model query failed.
pub(crate) fn query(error: &dyn std::fmt::Display) -> AppError {
    tracing::error!(error = %error, "read model failure");
    AppError::unavailable("the read model is unavailable; try again")
}

impl From<tokio_postgres::Error> for AppError {
    fn from(error: tokio_postgres::Error) -> Self {
        query(&error)
    }
}

impl From<trackhrs_projections::ProjectionError> for AppError {
    fn from(error: trackhrs_projections::ProjectionError) -> Self {
        tracing::error!(error = %error, "projection runtime failure");
        Self::unavailable("the projection runtime is unavailable; try again")
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        query(&error)
    }
}

impl From<CommandError<OrgError>> for AppError {
    fn from(error: CommandError<OrgError>) -> Self {
        match error {
            CommandError::Denied(denied) => denied.into(),
            CommandError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the organization kept changing under concurrent commands; try again",
            ),
            CommandError::Store(e) => e.into(),
        }
    }
}

impl From<OrgError> for AppError {
    fn from(denied: OrgError) -> Self {
        let kind = match denied {
            OrgError::NotAllowed => ErrorKind::NotAllowed,
            OrgError::InvalidName
            | OrgError::InvalidEmail
            | OrgError::InvalidSettings
            | OrgError::InvalidRules(_)
            | OrgError::InvalidAttribution(_) => ErrorKind::Invalid,
            OrgError::TeamNotFound => ErrorKind::NotFound,
            _ => ErrorKind::Precondition,
        };
        Self::new(kind, denied.to_string())
    }
}

impl From<CommandError<ErasureError>> for AppError {
    fn from(error: CommandError<ErasureError>) -> Self {
        match error {
            CommandError::Denied(ErasureError::NotAllowed) => {
                Self::not_allowed(ErasureError::NotAllowed.to_string())
            }
            CommandError::Denied(denied) => Self::precondition(denied.to_string()),
            CommandError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the erasure kept conflicting; run it again",
            ),
            CommandError::Store(e) => e.into(),
        }
    }
}

impl From<CommandError<ActivityError>> for AppError {
    fn from(error: CommandError<ActivityError>) -> Self {
        match error {
            CommandError::Denied(denied) => denied.into(),
            CommandError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the device's timeline kept changing; send the batch again",
            ),
            CommandError::Store(e) => e.into(),
        }
    }
}

/// A refused upload: bad spans name the span.
impl From<ActivityError> for AppError {
    fn from(denied: ActivityError) -> Self {
        match denied {
            ActivityError::Span { .. } | ActivityError::Empty => {
                Self::new(ErrorKind::Invalid, format!("spans: {denied}"))
            }
            ActivityError::Retraction { .. } => {
                Self::new(ErrorKind::Invalid, format!("retractions: {denied}"))
            }
            ActivityError::TooManySpans { .. } => {
                Self::new(ErrorKind::Exhausted, denied.to_string())
            }
            ActivityError::TooManyRetractions { .. } => {
                Self::new(ErrorKind::Exhausted, format!("retractions: {denied}"))
            }
            ActivityError::UnknownDevice | ActivityError::DeviceRevoked => {
                Self::not_allowed(denied.to_string())
            }
            ActivityError::SequenceUsed { .. } | ActivityError::SequenceGap { .. } => {
                Self::precondition(denied.to_string())
            }
        }
    }
}

impl From<CommandError<TimelineError>> for AppError {
    fn from(error: CommandError<TimelineError>) -> Self {
        match error {
            CommandError::Denied(denied) => denied.into(),
            CommandError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the device's timelines kept changing; send the batch again",
            ),
            CommandError::Store(e) => e.into(),
        }
    }
}

/// A refused timeline upload: bad changes name the change.
impl From<TimelineError> for AppError {
    fn from(denied: TimelineError) -> Self {
        match denied {
            TimelineError::Change { .. } | TimelineError::Empty => {
                Self::new(ErrorKind::Invalid, format!("changes: {denied}"))
            }
            TimelineError::TooManyChanges { .. } => {
                Self::new(ErrorKind::Exhausted, denied.to_string())
            }
            TimelineError::UnknownDevice | TimelineError::DeviceRevoked => {
                Self::not_allowed(denied.to_string())
            }
            TimelineError::SequenceUsed { .. } | TimelineError::SequenceGap { .. } => {
                Self::precondition(denied.to_string())
            }
        }
    }
}

impl From<CommandError<ProjectError>> for AppError {
    fn from(error: CommandError<ProjectError>) -> Self {
        match error {
            CommandError::Denied(denied) => denied.into(),
            CommandError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the project kept changing under concurrent commands; try again",
            ),
            CommandError::Store(e) => e.into(),
        }
    }
}

impl From<ProjectError> for AppError {
    fn from(denied: ProjectError) -> Self {
        let kind = match denied {
            ProjectError::NotAllowed => ErrorKind::NotAllowed,
            ProjectError::NotFound => ErrorKind::NotFound,
            ProjectError::InvalidName(_)
            | ProjectError::InvalidBudget
            | ProjectError::NegativeTime => ErrorKind::Invalid,
            ProjectError::Exists
            | ProjectError::TaskExists(_)
            | ProjectError::Archived
            | ProjectError::NotArchived => ErrorKind::Precondition,
        };
        Self::new(kind, denied.to_string())
    }
}

impl From<CommandError<TimesheetError>> for AppError {
    fn from(error: CommandError<TimesheetError>) -> Self {
        match error {
            CommandError::Denied(denied) => denied.into(),
            CommandError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the week kept changing under concurrent commands; try again",
            ),
            CommandError::Store(e) => e.into(),
        }
    }
}

/// A refused change to a week: malformed input names the field.
impl From<TimesheetError> for AppError {
    fn from(denied: TimesheetError) -> Self {
        use TimesheetError as E;
        match denied {
            E::NotTheMember | E::OwnWeek | E::MayNotDecide | E::NotAdmin => {
                Self::not_allowed(denied.to_string())
            }
            E::EndBeforeStart | E::TooLong => Self::invalid("end_ms", denied),
            E::OutsideWeek => Self::invalid("start_ms", denied),
            E::InvalidWeek => Self::invalid("week", denied),
            E::ReasonRequired => Self::invalid("comment", denied),
            E::NoSuchEntry(_) => Self::new(ErrorKind::NotFound, format!("entry_id: {denied}")),
            E::Locked(_)
            | E::WrongWeek
            | E::Overlaps(_)
            | E::EntryExists(_)
            | E::ProjectArchived
            | E::NotAllowedOnProject
            | E::NotSubmitted
            | E::NotApproved => Self::precondition(denied.to_string()),
        }
    }
}

impl From<CommandError<PayrollError>> for AppError {
    fn from(error: CommandError<PayrollError>) -> Self {
        match error {
            CommandError::Denied(denied) => denied.into(),
            CommandError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the payroll kept changing under concurrent commands; try again",
            ),
            CommandError::Store(e) => e.into(),
        }
    }
}

/// A refused pay-policy change or payroll run: malformed input names the
/// field.
impl From<PayrollError> for AppError {
    fn from(denied: PayrollError) -> Self {
        use PayrollError as E;
        match denied {
            E::NotAdmin => Self::not_allowed(denied.to_string()),
            E::Money(_) | E::BadRate => Self::invalid("amount", denied),
            E::Overtime(_) => Self::invalid("overtime", denied),
            E::BadName => Self::invalid("name", denied),
            E::BadDuration(_) => Self::invalid("hours", denied),
            E::NotAPeriod { .. } => Self::invalid("first_day", denied),
            E::NotAMember => Self::new(ErrorKind::NotFound, format!("person_id: {denied}")),
            E::NoRun(_) => Self::new(ErrorKind::NotFound, format!("first_day: {denied}")),
            E::CurrencyFixed
            | E::ScheduleOverlapsRun { .. }
            | E::NoCurrency
            | E::NotEnded { .. }
            | E::Finalized(_)
            | E::LaterFinalized(_)
            | E::EarlierDraft(_)
            | E::PreviousOpen(_)
            | E::StaleDraft { .. }
            | E::Missing(_) => Self::precondition(denied.to_string()),
        }
    }
}

impl From<CommandError<LeaveError>> for AppError {
    fn from(error: CommandError<LeaveError>) -> Self {
        match error {
            CommandError::Denied(denied) => denied.into(),
            CommandError::Conflict { .. } => Self::new(
                ErrorKind::Conflict,
                "the leave kept changing under concurrent commands; try again",
            ),
            CommandError::Store(e) => e.into(),
        }
    }
}

/// A refused leave command: malformed input names the field.
impl From<LeaveError> for AppError {
    fn from(denied: LeaveError) -> Self {
        use LeaveError as E;
        match denied {
            E::NotTheMember | E::OwnRequest | E::MayNotDecide | E::WrongMember => {
                Self::not_allowed(denied.to_string())
            }
            E::NoDays | E::TooManyDays => Self::invalid("to", denied),
            E::BadAmount => Self::invalid("hours_per_day", denied),
            E::BadAccrual => Self::invalid("ms", denied),
            E::NoSuchRequest(_) => Self::new(ErrorKind::NotFound, format!("request_id: {denied}")),
            E::RequestExists(_)
            | E::Overlaps { .. }
            | E::InsufficientBalance { .. }
            | E::NotPending(_)
            | E::Started => Self::precondition(denied.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: impl Into<AppError>) -> ErrorKind {
        e.into().kind()
    }

    #[test]
    fn each_kind_of_failure_is_classified() {
        let conflict: CommandError<OrgError> = CommandError::Conflict {
            subject: "evt.acme.organization.org".into(),
            attempts: 10,
        };
        assert_eq!(kind(conflict), ErrorKind::Conflict);
        assert_eq!(
            kind(CommandError::<OrgError>::Denied(OrgError::LastOwner)),
            ErrorKind::Precondition
        );
        assert_eq!(
            kind(CommandError::<OrgError>::Denied(OrgError::NotAllowed)),
            ErrorKind::NotAllowed
        );
        assert_eq!(
            kind(CommandError::<OrgError>::Store(StoreError::Unacknowledged(
                "x".into()
            ))),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(StoreError::CommandIdReused {
                command_id: "c".into()
            }),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(ActivityError::TooManySpans { max: 1 }),
            ErrorKind::Exhausted
        );
        assert_eq!(
            kind(AuthError::Throttled {
                retry_after_secs: 3
            }),
            ErrorKind::Exhausted
        );
        assert_eq!(kind(AuthError::Expired), ErrorKind::Unauthenticated);
    }
}
