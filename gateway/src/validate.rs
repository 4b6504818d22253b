//! Input validation at the edge: malformed input is INVALID_ARGUMENT naming
//! the field, before anything is stored.

use tonic::Status;
use trackhrs_domain::Token;
use trackhrs_domain::organization::{MAX_NAME_CHARS, Role, valid_email};
use trackhrs_schemas::org::v1 as pb;

use crate::status::status;

/// Largest seat count accepted.
pub const MAX_SEATS: u32 = 100_000;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// A command id: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`.
pub fn command_id(value: &str) -> Result<String, Status> {
    trackhrs_app::command_id(value).map_err(status)
}

/// An id: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn id(field: &str, value: &str) -> Result<Token, Status> {
    Token::new(value).map_err(|_| invalid(field, "must be 1 to 64 characters of A-Z a-z 0-9 _ -"))
}

/// A display name: 1 to 200 characters after trimming, no control characters.
pub fn name(field: &str, value: &str) -> Result<String, Status> {
    let trimmed = value.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(invalid(field, "must not be empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(invalid(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// An e-mail address: one `@`, a dotted domain, no spaces, at most 254 bytes.
pub fn email(field: &str, value: &str) -> Result<String, Status> {
    let value = value.trim();
    if valid_email(value) {
        Ok(value.to_owned())
    } else {
        Err(invalid(field, "is not a valid e-mail address"))
    }
}

/// A history query's filter: an optional person id, at most 20 event type
/// names (letters only), and a page size of 1 to 500 (100 when 0).
pub fn history_filter(
    r: &pb::ListHistoryRequest,
) -> Result<trackhrs_app::administration::HistoryFilter, Status> {
    let person = if r.person_id.is_empty() {
        None
    } else {
        Some(id("person_id", &r.person_id)?.to_string())
    };
    if r.event_types.len() > 20 {
        return Err(Status::invalid_argument(
            "event_types: at most 20 event types",
        ));
    }
    if let Some(bad) = r
        .event_types
        .iter()
        .find(|t| t.is_empty() || t.len() > 64 || !t.chars().all(|c| c.is_ascii_alphabetic()))
    {
        return Err(Status::invalid_argument(format!(
            "event_types: {bad:?} is not an event type name (letters only, e.g. MemberInvited)"
        )));
    }
    let limit = match r.limit {
        0 => 100,
        n if n <= trackhrs_app::administration::MAX_HISTORY_PAGE => n,
        n => {
            return Err(Status::invalid_argument(format!(
                "limit: {n} is more than {} entries",
                trackhrs_app::administration::MAX_HISTORY_PAGE
            )));
        }
    };
    if i64::try_from(r.before).is_err() {
        return Err(Status::invalid_argument(
            "before: not a position of the log (use a page's next_before)",
        ));
    }
    Ok(trackhrs_app::administration::HistoryFilter {
        person,
        event_types: r.event_types.clone(),
        before: r.before,
        limit,
    })
}

/// A page of a list by id: `after` is empty or an id (the previous page's
/// `next_after`), `limit` 1 to 1,000 (500 when 0).
pub fn page(after: &str, limit: u32) -> Result<trackhrs_app::administration::PageOf, Status> {
    use trackhrs_app::administration::{MAX_LIST_PAGE, PageOf};
    let after = if after.is_empty() {
        None
    } else {
        Some(id("after", after)?.to_string())
    };
    let limit = match limit {
        0 => 500,
        n if n <= MAX_LIST_PAGE => n,
        n => {
            return Err(invalid(
                "limit",
                format!("{n} is more than {MAX_LIST_PAGE}"),
            ));
        }
    };
    Ok(PageOf { after, limit })
}

/// A seat count from 1 to [`MAX_SEATS`].
pub fn seats(value: u32) -> Result<u32, Status> {
    if (1..=MAX_SEATS).contains(&value) {
        Ok(value)
    } else {
        Err(invalid("seats", format!("must be 1 to {MAX_SEATS}")))
    }
}

/// A role other than unspecified.
pub fn role(value: i32) -> Result<Role, Status> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Owner) => Ok(Role::Owner),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Manager) => Ok(Role::Manager),
        Ok(pb::Role::Employee) => Ok(Role::Employee),
        Ok(pb::Role::Auditor) => Ok(Role::Auditor),
        _ => Err(invalid(
            "role",
            "must be one of owner, admin, manager, employee, auditor",
        )),
    }
}

/// The wire form of a role.
pub fn role_to_wire(role: Role) -> pb::Role {
    match role {
        Role::Owner => pb::Role::Owner,
        Role::Admin => pb::Role::Admin,
        Role::Manager => pb::Role::Manager,
        Role::Employee => pb::Role::Employee,
        Role::Auditor => pb::Role::Auditor,
    }
}

/// Settings: a real IANA time zone and at least one working day, each once.
pub fn settings(
    value: Option<pb::Settings>,
) -> Result<trackhrs_domain::organization::Settings, Status> {
    use trackhrs_domain::organization::Weekday;
    let value = value.ok_or_else(|| invalid("settings", "is required"))?;
    if value.timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(invalid(
            "settings.timezone",
            "is not an IANA time zone such as Europe/Berlin",
        ));
    }
    let mut days = Vec::with_capacity(value.work_week.len());
    for day in &value.work_week {
        let day = match pb::Weekday::try_from(*day) {
            Ok(pb::Weekday::Monday) => Weekday::Monday,
            Ok(pb::Weekday::Tuesday) => Weekday::Tuesday,
            Ok(pb::Weekday::Wednesday) => Weekday::Wednesday,
            Ok(pb::Weekday::Thursday) => Weekday::Thursday,
            Ok(pb::Weekday::Friday) => Weekday::Friday,
            Ok(pb::Weekday::Saturday) => Weekday::Saturday,
            Ok(pb::Weekday::Sunday) => Weekday::Sunday,
            _ => return Err(invalid("settings.work_week", "holds an unknown day")),
        };
        days.push(day);
    }
    days.sort();
    let before = days.len();
    days.dedup();
    if days.is_empty() || days.len() != before {
        return Err(invalid(
            "settings.work_week",
            "needs at least one day, each day once",
        ));
    }
    Ok(trackhrs_domain::organization::Settings {
        timezone: value.timezone,
        work_week: days,
        capture_titles: value.capture_titles,
        capture_urls: value.capture_urls,
    })
}

/// The wire form of settings.
pub fn settings_to_wire(settings: &trackhrs_domain::organization::Settings) -> pb::Settings {
    use trackhrs_domain::organization::Weekday;
    pb::Settings {
        timezone: settings.timezone.clone(),
        work_week: settings
            .work_week
            .iter()
            .map(|d| {
                (match d {
                    Weekday::Monday => pb::Weekday::Monday,
                    Weekday::Tuesday => pb::Weekday::Tuesday,
                    Weekday::Wednesday => pb::Weekday::Wednesday,
                    Weekday::Thursday => pb::Weekday::Thursday,
                    Weekday::Friday => pb::Weekday::Friday,
                    Weekday::Saturday => pb::Weekday::Saturday,
                    Weekday::Sunday => pb::Weekday::Sunday,
                }) as i32
            })
            .collect(),
        capture_titles: settings.capture_titles,
        capture_urls: settings.capture_urls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        assert!(
            name("org_name", "  ")
                .unwrap_err()
                .message()
                .starts_with("org_name:")
        );
        assert!(
            name("org_name", &"x".repeat(201))
                .unwrap_err()
                .message()
                .contains("at most 200")
        );
        assert_eq!(name("n", "  Ada  ").unwrap(), "Ada");
        for bad in [
            "",
            "a",
            "a@b",
            "@b.test",
            "a b@c.test",
            "a@b.test.",
            "a@@b.test",
        ] {
            assert!(email("owner_email", bad).is_err(), "{bad}");
        }
        assert_eq!(email("e", "ada@acme.test").unwrap(), "ada@acme.test");
        assert!(command_id("with space").is_err());
        assert!(seats(0).is_err() && seats(MAX_SEATS + 1).is_err());
        assert!(role(0).is_err() && role(99).is_err());
        let bad_tz = settings(Some(pb::Settings {
            timezone: "Mars/Olympus".into(),
            work_week: vec![1],
            ..Default::default()
        }));
        assert!(
            bad_tz
                .unwrap_err()
                .message()
                .starts_with("settings.timezone:")
        );
        let twice = settings(Some(pb::Settings {
            timezone: "UTC".into(),
            work_week: vec![1, 1],
            ..Default::default()
        }));
        assert!(
            twice
                .unwrap_err()
                .message()
                .starts_with("settings.work_week:")
        );
    }
}
