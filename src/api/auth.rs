//! API keys: bearer tokens checked against SHA-256 hashes, so the configuration never holds a
//! usable key. `enclave hash-api-key` prints the hash form (`sha256:<64 hex digits>`).
//!
//! A key is a secret generated at random by the operator, so a plain SHA-256 (no salt, no
//! stretching) is enough: there is no dictionary to guess from. Depends on nothing but `sha2`.

use sha2::{Digest, Sha256};

pub const HASH_PREFIX: &str = "sha256:";

#[derive(Debug, thiserror::Error)]
#[error("`{given}` is not an API key hash: give `sha256:` and 64 hex digits (from `enclave hash-api-key`)")]
pub struct KeyHashError {
    given: String,
}

/// The digest of one key; also what per-key limits are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    pub fn parse(s: &str) -> Result<Self, KeyHashError> {
        let err = || KeyHashError {
            given: s.chars().take(80).collect(),
        };
        let hex = s.trim().strip_prefix(HASH_PREFIX).ok_or_else(err)?;
        if hex.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(err)?, 16)
                .map_err(|_| err())?;
        }
        Ok(Self(out))
    }
}

impl std::fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(HASH_PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The keys the server accepts; empty means no authentication.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    digests: Vec<KeyDigest>,
}

/// Who a request is, once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The server has no keys configured.
    Anonymous,
    Key(KeyDigest),
}

impl ApiKeys {
    pub fn new(digests: Vec<KeyDigest>) -> Self {
        Self { digests }
    }

    pub fn is_enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// `authorization`: the header's value, if any.
    pub fn check(&self, authorization: Option<&str>) -> Result<Caller, &'static str> {
        if !self.is_enabled() {
            return Ok(Caller::Anonymous);
        }
        let Some(value) = authorization else {
            return Err("no API key given: send `Authorization: Bearer <key>`");
        };
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or("the Authorization header must be `Bearer <key>`")?;
        let digest = KeyDigest::of(key.trim());
        if self.digests.contains(&digest) {
            Ok(Caller::Key(digest))
        } else {
            Err("the API key is not valid")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_by_hash() {
        let digest = KeyDigest::of("s3cret");
        let text = digest.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 71);
        assert_eq!(KeyDigest::parse(&text).ok(), Some(digest));
        let keys = ApiKeys::new(vec![digest]);
        assert_eq!(keys.check(Some("Bearer s3cret")), Ok(Caller::Key(digest)));
        assert!(keys.check(Some("Bearer wrong")).is_err());
        assert!(keys.check(Some("s3cret")).is_err());
        assert!(keys.check(None).is_err());
        assert_eq!(ApiKeys::default().check(None), Ok(Caller::Anonymous));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        assert!(KeyDigest::parse("s3cret").is_err());
        assert!(KeyDigest::parse("sha256:abc").is_err());
        assert!(KeyDigest::parse(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }
}
