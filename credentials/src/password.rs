//! Password hashing (argon2id, the argon2 crate's default parameters) and the
//! password policy.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in characters (bounds the hashing work).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Passwords refused whatever their length, compared case-insensitively.
const COMMON: [&str; 8] = [
    "passwordpassword",
    "password1234",
    "123456789012",
    "qwertyuiopas",
    "letmeinletmein",
    "administrator",
    "iloveyou1234",
    "trackhrs1234",
];

/// Why a password is refused by the policy; the text is shown to the user.
pub fn policy_violation(password: &str, email: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Some(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Some(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return Some("is too common".into());
    }
    if password
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 4
    {
        return Some("needs at least 4 different characters".into());
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.len() >= 4 && lower.contains(&local) {
        return Some("must not contain the e-mail address".into());
    }
    None
}

/// Hashes a password with a random salt (blocking: call off the async runtime).
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches `stored` (blocking). A malformed stored hash
/// never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_argon2id() {
        let stored = hash("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterY", &stored));
        assert!(!verify("correct horse battery", "not a hash"));
    }

    #[test]
    fn the_policy_names_what_is_wrong() {
        assert!(
            policy_violation("short", "a@b.test")
                .unwrap()
                .contains("at least 12")
        );
        assert!(
            policy_violation("Password1234", "a@b.test")
                .unwrap()
                .contains("common")
        );
        assert!(
            policy_violation("aaaaaaaaaaaaaa", "a@b.test")
                .unwrap()
                .contains("different")
        );
        assert!(
            policy_violation("xx-olivia-2026-xx", "olivia@acme.test")
                .unwrap()
                .contains("e-mail")
        );
        assert!(
            policy_violation(&"x1".repeat(70), "a@b.test")
                .unwrap()
                .contains("at most")
        );
        assert_eq!(
            policy_violation("correct horse battery", "olive@acme.test"),
            None
        );
    }
}
