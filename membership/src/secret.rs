//! The cluster secret and the keys derived from it.
//!
//! One 32-byte secret derives two independent keys with BLAKE3's key
//! derivation: the key that signs gossiped state and the ractor_cluster
//! cookie. A node started without a secret uses the all-zero secret, so open
//! clusters still work, and nodes with a real secret never trust them.

use std::fmt;

use crate::{Error, Result};

const SIGNING_CONTEXT: &str = "gpumesh 2026-11 gossip state signing key v1";
const COOKIE_CONTEXT: &str = "gpumesh 2026-11 ractor_cluster cookie v1";

/// Length of the cluster secret in bytes.
pub const SECRET_LEN: usize = 32;

/// The shared cluster secret (32 bytes, written as 64 hex digits).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; SECRET_LEN]);

impl ClusterSecret {
    /// The secret of an open cluster, used when no secret file is given.
    pub fn open_cluster() -> Self {
        Self([0; SECRET_LEN])
    }

    /// Wraps raw secret bytes, for example from a random number generator.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the text of a secret file: 64 hex digits, surrounding
    /// whitespace ignored.
    pub fn parse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        let mut bytes = [0u8; SECRET_LEN];
        hex::decode_to_slice(trimmed, &mut bytes).map_err(|_| {
            Error::InvalidSecret(format!(
                "expected {} hex digits, found {} characters; create one with `gpumesh keygen`",
                SECRET_LEN * 2,
                trimmed.chars().count()
            ))
        })?;
        Ok(Self(bytes))
    }

    /// The secret as 64 hex digits, the secret file format.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key that signs and verifies gossiped state.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey(blake3::derive_key(SIGNING_CONTEXT, &self.0))
    }

    /// The ractor_cluster cookie: nodes whose cookies differ cannot link.
    pub fn cluster_cookie(&self) -> String {
        hex::encode(blake3::derive_key(COOKIE_CONTEXT, &self.0))
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// The key that signs gossiped values (derived from the cluster secret).
#[derive(Clone)]
pub struct SigningKey(pub(crate) [u8; 32]);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_bad_text() {
        let secret = ClusterSecret::from_bytes([7; 32]);
        let parsed = ClusterSecret::parse(&format!("  {}\n", secret.to_hex())).expect("parses");
        assert_eq!(parsed, secret);
        assert!(ClusterSecret::parse("abc").is_err());
        assert!(ClusterSecret::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn derived_keys_differ_per_secret_and_purpose() {
        let a = ClusterSecret::from_bytes([1; 32]);
        let b = ClusterSecret::from_bytes([2; 32]);
        assert_ne!(a.cluster_cookie(), b.cluster_cookie());
        assert_ne!(a.signing_key().0, b.signing_key().0);
        assert_ne!(hex::encode(a.signing_key().0), a.cluster_cookie());
    }
}
