//! The signed value format of gossiped state.
//!
//! A value is `v1.<seq>.<signature hex>.<payload>`. The signature is a BLAKE3
//! keyed hash over the publishing node's name and generation, the gossip
//! key, the sequence number and the payload, so a value cannot be moved to
//! another node, another key or another generation, and a verifier can
//! refuse a replayed older value by its sequence number.

use crate::SigningKey;

const FORMAT_TAG: &str = "v1";
const DOMAIN: &[u8] = b"gpumesh-gossip-value-v1";

/// Why a gossiped value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedValueError {
    #[error("malformed signed value")]
    Malformed,
    #[error("signature does not verify")]
    BadSignature,
}

fn mac(key: &SigningKey, node: &str, generation: u64, gossip_key: &str, seq: u64, payload: &str) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(&key.0);
    hasher.update(DOMAIN);
    for part in [node.as_bytes(), gossip_key.as_bytes()] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.update(&generation.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload.as_bytes());
    hasher.finalize()
}

/// Signs `payload` as the value of `gossip_key` published by `node` in `generation`.
pub fn sign_value(key: &SigningKey, node: &str, generation: u64, gossip_key: &str, seq: u64, payload: &str) -> String {
    let signature = mac(key, node, generation, gossip_key, seq, payload);
    format!("{FORMAT_TAG}.{seq}.{}.{payload}", signature.to_hex())
}

/// Verifies a signed value and returns its sequence number and payload.
/// Never panics, whatever the bytes.
pub fn verify_value<'a>(
    key: &SigningKey,
    node: &str,
    generation: u64,
    gossip_key: &str,
    value: &'a str,
) -> Result<(u64, &'a str), SignedValueError> {
    let mut parts = value.splitn(4, '.');
    let (Some(tag), Some(seq), Some(signature), Some(payload)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignedValueError::Malformed);
    };
    if tag != FORMAT_TAG {
        return Err(SignedValueError::Malformed);
    }
    let seq: u64 = seq.parse().map_err(|_| SignedValueError::Malformed)?;
    let signature = blake3::Hash::from_hex(signature).map_err(|_| SignedValueError::Malformed)?;
    // blake3::Hash equality is constant time.
    if signature == mac(key, node, generation, gossip_key, seq, payload) {
        Ok((seq, payload))
    } else {
        Err(SignedValueError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ClusterSecret;

    fn key(byte: u8) -> SigningKey {
        ClusterSecret::from_bytes([byte; 32]).signing_key()
    }

    #[test]
    fn round_trip_verifies() {
        let value = sign_value(&key(1), "n1", 7, "info", 3, r#"{"a":1}"#);
        assert_eq!(verify_value(&key(1), "n1", 7, "info", &value), Ok((3, r#"{"a":1}"#)));
    }

    #[test]
    fn binding_to_key_node_generation_and_field() {
        let value = sign_value(&key(1), "n1", 7, "info", 3, "{}");
        let bad = Err(SignedValueError::BadSignature);
        assert_eq!(verify_value(&key(2), "n1", 7, "info", &value), bad);
        assert_eq!(verify_value(&key(1), "n2", 7, "info", &value), bad);
        assert_eq!(verify_value(&key(1), "n1", 8, "info", &value), bad);
        assert_eq!(verify_value(&key(1), "n1", 7, "load", &value), bad);
        let tampered = value.replace("{}", "{ }");
        assert_eq!(verify_value(&key(1), "n1", 7, "info", &tampered), bad);
    }

    #[test]
    fn name_and_key_boundaries_are_unambiguous() {
        let value = sign_value(&key(1), "ab", 1, "c", 1, "{}");
        assert!(verify_value(&key(1), "a", 1, "bc", &value).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_or_verifies(text in ".{0,200}") {
            prop_assert!(verify_value(&key(1), "n1", 1, "info", &text).is_err());
        }

        #[test]
        fn any_payload_round_trips(payload in ".{0,200}", seq in any::<u64>(), generation in any::<u64>()) {
            let value = sign_value(&key(3), "n", generation, "load", seq, &payload);
            prop_assert_eq!(verify_value(&key(3), "n", generation, "load", &value), Ok((seq, payload.as_str())));
        }
    }
}
