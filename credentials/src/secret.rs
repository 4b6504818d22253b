//! Opaque secrets (refresh, device and invitation tokens): random, shown once,
//! stored only as SHA-256 digests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Kinds of opaque token, each with its own visible prefix.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A refresh token (`thr_`).
    Refresh,
    /// A device token (`thd_`).
    Device,
    /// An invitation token (`thi_`).
    Invitation,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Refresh => "thr_",
            Self::Device => "thd_",
            Self::Invitation => "thi_",
        }
    }
}

/// A new random token of `kind` (256 bits) and its digest.
pub fn generate(kind: Kind) -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes));
    let digest = digest(&token);
    (token, digest)
}

/// The digest stored for `token`, or `None` when it is not shaped like a
/// token of `kind` (so obviously wrong input costs no database round trip).
pub fn digest_of(kind: Kind, token: &str) -> Option<Vec<u8>> {
    let body = token.strip_prefix(kind.prefix())?;
    (body.len() == 43 && URL_SAFE_NO_PAD.decode(body).is_ok()).then(|| digest(token))
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_their_kind_and_digest() {
        let (token, stored) = generate(Kind::Device);
        assert!(token.starts_with("thd_"));
        assert_eq!(digest_of(Kind::Device, &token), Some(stored));
        assert_eq!(digest_of(Kind::Refresh, &token), None);
        assert_eq!(digest_of(Kind::Device, "thd_short"), None);
        let (other, _) = generate(Kind::Device);
        assert_ne!(token, other);
    }
}
