//! Personal data inside events, marked so the event store can seal it with the
//! data subject's key (crypto-shredding) and report it erased once the key is gone.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::PersonId;

/// JSON key that marks a personal-data object; the value is the data subject.
pub const SUBJECT_KEY: &str = "$pd";
/// JSON key of the clear value inside a personal-data object (in memory only).
pub const VALUE_KEY: &str = "v";
/// JSON key of the sealed value inside a personal-data object (as stored).
pub const SEALED_KEY: &str = "ct";

/// A piece of personal data about one person: a name, an e-mail address, a
/// window title, a URL.
///
/// In memory it holds the clear value; in the log it is stored sealed with the
/// subject's data key. When the subject has been erased, it loads as erased
/// (`value()` is `None`) while the rest of the event still loads.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    #[serde(rename = "$pd")]
    subject: PersonId,
    #[serde(rename = "v", default)]
    value: Option<String>,
}

impl PersonalData {
    /// Personal data about `subject`.
    pub fn new(subject: PersonId, value: impl Into<String>) -> Self {
        Self {
            subject,
            value: Some(value.into()),
        }
    }

    /// Whose data this is.
    pub fn subject(&self) -> &PersonId {
        &self.subject
    }

    /// The clear value, or `None` when the subject has been erased.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// True when the subject's key was destroyed.
    pub fn is_erased(&self) -> bool {
        self.value.is_none()
    }
}

/// Debug output never shows the value, so personal data stays out of logs.
impl fmt::Debug for PersonalData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.value.is_some() {
            "<redacted>"
        } else {
            "<erased>"
        };
        write!(f, "PersonalData({}: {shown})", self.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_marker_and_hides_value_in_debug() {
        let pd = PersonalData::new(PersonId::new("p1").unwrap(), "ann@example.com");
        let json = serde_json::to_value(&pd).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"$pd": "p1", "v": "ann@example.com"})
        );
        assert!(!format!("{pd:?}").contains("ann"));
        let erased: PersonalData =
            serde_json::from_value(serde_json::json!({"$pd": "p1"})).unwrap();
        assert!(erased.is_erased());
    }
}
