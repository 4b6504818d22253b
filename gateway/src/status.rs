//! The one place where the application's errors become gRPC statuses.
//!
//! - bad input: INVALID_ARGUMENT, naming the field (see `validate.rs`);
//! - no or bad credentials: UNAUTHENTICATED, with the same message whether an
//!   account, token or organization exists or not;
//! - a role that may not do this, or another organization's ids:
//!   PERMISSION_DENIED, without saying whether the target exists;
//! - an invariant the aggregate upholds: FAILED_PRECONDITION with its reason;
//! - a conflict that outlived the retries: ABORTED;
//! - too large, over an upload quota, or too many log-in attempts:
//!   RESOURCE_EXHAUSTED (the last two with `retry-after` metadata);
//! - the store unreachable or an outcome unknown: UNAVAILABLE (retrying with
//!   the same command id is safe).

use tonic::{Code, Status};
use trackhrs_app::{AppError, ErrorKind};

/// The gRPC code of each kind of application error.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Invalid => Code::InvalidArgument,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::NotAllowed => Code::PermissionDenied,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Precondition => Code::FailedPrecondition,
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::Exhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Timeout => Code::DeadlineExceeded,
    }
}

/// The status of an application error; one that says when to try again
/// carries it as `retry-after` metadata (whole seconds).
pub fn status(error: AppError) -> Status {
    let mut status = Status::new(code(error.kind()), error.message());
    if let Some(wait) = error.wait() {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        status
            .metadata_mut()
            .insert("retry-after", seconds.max(1).into());
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code() {
        let table = [
            (ErrorKind::Invalid, Code::InvalidArgument),
            (ErrorKind::Unauthenticated, Code::Unauthenticated),
            (ErrorKind::NotAllowed, Code::PermissionDenied),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::Precondition, Code::FailedPrecondition),
            (ErrorKind::Conflict, Code::Aborted),
            (ErrorKind::Exhausted, Code::ResourceExhausted),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::Timeout, Code::DeadlineExceeded),
        ];
        for (kind, expected) in table {
            let s = status(AppError::new(kind, "why"));
            assert_eq!((s.code(), s.message()), (expected, "why"), "{kind:?}");
        }
    }
}
