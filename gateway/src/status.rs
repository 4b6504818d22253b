//! The one place where domain, command, store and authentication errors
//! become gRPC statuses.
//!
//! - bad input: INVALID_ARGUMENT, naming the field (see `validate.rs`);
//! - no or bad credentials: UNAUTHENTICATED, with the same message whether an
//!   account, token or organization exists or not;
//! - a role that may not do this, or another organization's ids:
//!   PERMISSION_DENIED, without saying whether the target exists;
//! - an invariant the aggregate upholds: FAILED_PRECONDITION with its reason;
//! - a conflict that outlived the retries: ABORTED;
//! - too many log-in attempts: RESOURCE_EXHAUSTED;
//! - the store unreachable or an outcome unknown: UNAVAILABLE (retrying with
//!   the same command id is safe).

use tonic::{Code, Status};
use trackhrs_commands::CommandError;
use trackhrs_domain::activity::ActivityError;
use trackhrs_domain::organization::OrgError;
use trackhrs_domain::timeline::TimelineError;
use trackhrs_nats::StoreError;

use crate::auth::AuthError;

/// The message for every request that touches another organization.
pub const NOT_YOURS: &str = "not allowed in this organization";

/// Status of a command on the organization aggregate.
pub fn org_command(error: CommandError<OrgError>) -> Status {
    match error {
        CommandError::Denied(denied) => org_denied(&denied),
        CommandError::Conflict { .. } => {
            Status::aborted("the organization kept changing under concurrent commands; try again")
        }
        CommandError::Store(e) => store(&e),
    }
}

/// Status of a domain denial.
pub fn org_denied(denied: &OrgError) -> Status {
    let message = denied.to_string();
    match denied {
        OrgError::NotAllowed => Status::permission_denied(message),
        OrgError::InvalidName
        | OrgError::InvalidEmail
        | OrgError::InvalidSettings
        | OrgError::InvalidRules(_) => Status::invalid_argument(message),
        _ => Status::failed_precondition(message),
    }
}

/// Status of an upload on a device's timeline.
pub fn activity_command(error: CommandError<ActivityError>) -> Status {
    match error {
        CommandError::Denied(denied) => activity_denied(&denied),
        CommandError::Conflict { .. } => {
            Status::aborted("the device's timeline kept changing; send the batch again")
        }
        CommandError::Store(e) => store(&e),
    }
}

/// Status of a refused upload: bad spans name the span.
pub fn activity_denied(denied: &ActivityError) -> Status {
    match denied {
        ActivityError::Span { .. } => Status::invalid_argument(format!("spans: {denied}")),
        ActivityError::Empty => Status::invalid_argument(format!("spans: {denied}")),
        ActivityError::TooManySpans { .. } => Status::resource_exhausted(denied.to_string()),
        ActivityError::UnknownDevice | ActivityError::DeviceRevoked => {
            Status::permission_denied(denied.to_string())
        }
        ActivityError::SequenceUsed { .. } | ActivityError::SequenceGap { .. } => {
            Status::failed_precondition(denied.to_string())
        }
    }
}

/// Status of a timeline upload.
pub fn timeline_command(error: CommandError<TimelineError>) -> Status {
    match error {
        CommandError::Denied(denied) => timeline_denied(&denied),
        CommandError::Conflict { .. } => {
            Status::aborted("the device's timelines kept changing; send the batch again")
        }
        CommandError::Store(e) => store(&e),
    }
}

/// Status of a refused timeline upload: bad changes name the change.
pub fn timeline_denied(denied: &TimelineError) -> Status {
    match denied {
        TimelineError::Change { .. } | TimelineError::Empty => {
            Status::invalid_argument(format!("changes: {denied}"))
        }
        TimelineError::TooManyChanges { .. } => Status::resource_exhausted(denied.to_string()),
        TimelineError::UnknownDevice | TimelineError::DeviceRevoked => {
            Status::permission_denied(denied.to_string())
        }
        TimelineError::SequenceUsed { .. } | TimelineError::SequenceGap { .. } => {
            Status::failed_precondition(denied.to_string())
        }
    }
}

/// Status of an event-store failure.
pub fn store(error: &StoreError) -> Status {
    match error {
        StoreError::Unacknowledged { .. } => Status::unavailable(
            "the event store did not confirm the command; retry with the same command id",
        ),
        StoreError::Conflict { .. } => Status::aborted("the organization kept changing; try again"),
        StoreError::CommandIdReused { .. } => Status::already_exists(
            "this command id was already used for a different request; choose a new one",
        ),
        StoreError::Erased { .. } => Status::failed_precondition(
            "this person's data was erased; their account cannot change",
        ),
        other => {
            tracing::error!(error = %other, "event store failure");
            Status::unavailable("the event store is unavailable; try again")
        }
    }
}

/// Status of an authentication failure.
pub fn auth(error: AuthError) -> Status {
    match &error {
        AuthError::BadToken
        | AuthError::Expired
        | AuthError::Revoked
        | AuthError::BadCredentials => Status::unauthenticated(error.to_string()),
        AuthError::Throttled { .. } => Status::resource_exhausted(error.to_string()),
        AuthError::LastKey | AuthError::InvitationUsed => {
            Status::failed_precondition(error.to_string())
        }
        AuthError::Db(e) => {
            // Only the code and message: a constraint's DETAIL would name
            // the e-mail address that collided.
            tracing::error!(
                code = e.code().map(|c| c.code()),
                message = e.as_db_error().map(|d| d.message()),
                "credential store failure"
            );
            Status::unavailable("the credential store is unavailable; try again")
        }
        AuthError::NoKey | AuthError::Pool(_) | AuthError::Internal(_) => {
            tracing::error!(error = %error, "credential store failure");
            Status::unavailable("the credential store is unavailable; try again")
        }
    }
}

/// Status of a read-model query failure.
pub fn query(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %error, "read model failure");
    Status::new(
        Code::Unavailable,
        "the read model is unavailable; try again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_code() {
        let conflict: CommandError<OrgError> = CommandError::Conflict {
            subject: "evt.acme.organization.org".into(),
            attempts: 10,
        };
        assert_eq!(org_command(conflict).code(), Code::Aborted);
        assert_eq!(
            org_command(CommandError::Denied(OrgError::LastOwner)).code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            org_command(CommandError::Denied(OrgError::NotAllowed)).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            org_command(CommandError::Store(StoreError::Unacknowledged("x".into()))).code(),
            Code::Unavailable
        );
        assert_eq!(
            store(&StoreError::CommandIdReused {
                command_id: "c".into()
            })
            .code(),
            Code::AlreadyExists
        );
        assert_eq!(
            activity_denied(&ActivityError::TooManySpans { max: 1 }).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            auth(AuthError::Throttled {
                retry_after_secs: 3
            })
            .code(),
            Code::ResourceExhausted
        );
        assert_eq!(auth(AuthError::Expired).code(), Code::Unauthenticated);
    }
}
