//! The node name: the id of a node in the cluster, stable across restarts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Longest accepted node name, in bytes.
pub(crate) const NODE_NAME_MAX_LEN: usize = 63;

/// A validated node name: 1 to 63 ASCII letters, digits, `-` or `_`,
/// starting with a letter or digit. It appears in URLs, job ids and
/// gossip keys, so it never contains separators.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    /// Validates `name` as a node name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > NODE_NAME_MAX_LEN {
            Some("it is longer than 63 characters")
        } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            Some("use only letters, digits, '-' and '_'")
        } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
            Some("it must start with a letter or a digit")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName { name, reason }),
            None => Ok(Self(name)),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

impl From<NodeName> for String {
    fn from(value: NodeName) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects_names() {
        for good in ["n1", "gpu-box_7", "A", &"x".repeat(63)] {
            assert!(NodeName::new(good).is_ok(), "{good} should be accepted");
        }
        for bad in ["", "-lead", "has space", "a/b", "ü", &"x".repeat(64)] {
            assert!(NodeName::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
