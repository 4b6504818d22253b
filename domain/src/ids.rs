//! Identifiers that end up in NATS subjects, so they are restricted to subject-safe tokens.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// A rejected identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty identifier.
    #[error("identifier must not be empty")]
    Empty,
    /// Too long.
    #[error("identifier longer than {MAX_ID_LEN} bytes")]
    TooLong,
    /// Contains a character outside `[A-Za-z0-9_-]`.
    #[error("identifier {0:?} may only contain ASCII letters, digits, '-' and '_'")]
    BadChar(String),
}

/// A validated identifier token: `[A-Za-z0-9_-]{1,64}`. Safe as one NATS subject
/// token and as a KV key part. Shared, not copied, when cloned: events name
/// the member of every span they record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(Arc<str>);

/// Written as its text, without the copy `into = "String"` would make (a
/// token is serialized with every event that names a member or device).
impl Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl Token {
    /// Validates `s` as a token (one allocation, once valid).
    pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
        let s = s.as_ref();
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(IdError::BadChar(s.to_owned()));
        }
        Ok(Self(s.into()))
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Token {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

/// Read from the text as it is (borrowed where the format allows), validated,
/// then stored: one allocation per token read, on every replay.
impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Token;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an identifier token")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Token, E> {
                Token::new(s).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl From<Token> for String {
    fn from(t: Token) -> String {
        String::from(&*t.0)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person (data subject). Personal data about them is sealed with their own
/// key, so erasing the key erases the data everywhere.
pub type PersonId = Token;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe() {
        assert!(Token::new("org-1_A").is_ok());
        assert_eq!(Token::new(""), Err(IdError::Empty));
        assert_eq!(Token::new("a".repeat(65)), Err(IdError::TooLong));
        for bad in ["a.b", "a*", "a>", "a b", "é"] {
            assert!(matches!(Token::new(bad), Err(IdError::BadChar(_))), "{bad}");
        }
        assert!(serde_json::from_str::<Token>("\"a.b\"").is_err());
    }

    #[test]
    fn tokens_serialize_as_their_text() {
        let t = Token::new("dev-7_A").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"dev-7_A\"");
        assert_eq!(serde_json::from_str::<Token>("\"dev-7_A\"").unwrap(), t);
        // Escaped text, and a JSON tree, read the same.
        assert_eq!(
            serde_json::from_str::<Token>("\"dev-7\\u005fA\"").unwrap(),
            t
        );
        assert_eq!(
            serde_json::from_value::<Token>(serde_json::json!("dev-7_A")).unwrap(),
            t
        );
    }
}
