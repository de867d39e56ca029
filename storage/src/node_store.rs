//! The node's sled database and its identity.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const IDENTITY_TREE: &str = "identity";
const NAME_KEY: &str = "name";
const GENERATION_KEY: &str = "generation";

/// Who this node is: its name, kept across restarts, and its generation,
/// which grows at every start so peers tell a restarted node from its
/// previous life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub generation: u64,
    /// True when this start created the identity.
    pub created: bool,
}

/// The sled database in a node's data directory.
#[derive(Clone, Debug)]
pub struct NodeStore {
    db: sled::Db,
    path: PathBuf,
}

impl NodeStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|error| Error::Open { path: path.clone(), reason: error.to_string() })?;
        let db = sled::Config::new().path(dir).open().map_err(|error| match error {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || is_lock_error(&io) => {
                Error::Locked { path: path.clone() }
            }
            sled::Error::Io(io) => Error::Open { path: path.clone(), reason: io.to_string() },
            other => Error::Sled(other),
        })?;
        Ok(Self { db, path: dir.to_path_buf() })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the identity, creating it on first start, and records a new
    /// generation durably before returning.
    ///
    /// `requested_name` is `--name`; `new_name` makes a name when neither it
    /// nor a stored one exists. `min_generation` (the start time in ms)
    /// keeps generations growing even if the data dir was wiped.
    pub fn start_identity(
        &self,
        requested_name: Option<&str>,
        new_name: impl FnOnce() -> String,
        min_generation: u64,
    ) -> Result<Identity> {
        let tree = self.db.open_tree(IDENTITY_TREE)?;
        let stored = tree
            .get(NAME_KEY)?
            .map(|bytes| String::from_utf8(bytes.to_vec()).map_err(|_| Error::Corrupt { what: "node name" }))
            .transpose()?;
        let (name, created) = match (stored, requested_name) {
            (Some(stored), Some(requested)) if stored != requested => {
                return Err(Error::NameMismatch {
                    path: self.path.display().to_string(),
                    stored,
                    requested: requested.to_string(),
                });
            }
            (Some(stored), _) => (stored, false),
            (None, Some(requested)) => (requested.to_string(), true),
            (None, None) => (new_name(), true),
        };
        let previous = match tree.get(GENERATION_KEY)? {
            Some(bytes) => u64::from_be_bytes(
                bytes.as_ref().try_into().map_err(|_| Error::Corrupt { what: "generation counter" })?,
            ),
            None => 0,
        };
        let generation = previous.saturating_add(1).max(min_generation);
        tree.insert(NAME_KEY, name.as_bytes())?;
        tree.insert(GENERATION_KEY, &generation.to_be_bytes())?;
        tree.flush()?;
        Ok(Identity { name, generation, created })
    }

    /// The job store in this database.
    pub fn jobs(&self) -> Result<crate::SledJobStore> {
        crate::SledJobStore::open(&self.db)
    }

    /// The metrics history in this database, keeping samples for `keep_ms`.
    pub fn history(&self, keep_ms: u64) -> Result<crate::MetricsHistory> {
        crate::MetricsHistory::open(&self.db, keep_ms)
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

fn is_lock_error(error: &std::io::Error) -> bool {
    // sled reports a held lock as "could not acquire lock" (EWOULDBLOCK/EAGAIN).
    error.raw_os_error() == Some(11) || error.to_string().contains("lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_and_generation_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = {
            let store = NodeStore::open(dir.path()).expect("open");
            store.start_identity(None, || "gen-name".into(), 0).expect("identity")
        };
        assert_eq!((first.name.as_str(), first.generation, first.created), ("gen-name", 1, true));
        let store = NodeStore::open(dir.path()).expect("reopen");
        let second = store.start_identity(None, || panic!("must not generate"), 0).expect("identity");
        assert_eq!((second.name.as_str(), second.generation, second.created), ("gen-name", 2, false));
        let third = store.start_identity(Some("gen-name"), || unreachable!(), 100).expect("identity");
        assert_eq!(third.generation, 100, "min_generation wins when larger");
    }

    #[test]
    fn requested_name_is_used_then_enforced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::open(dir.path()).expect("open");
        let id = store.start_identity(Some("n1"), || unreachable!(), 0).expect("identity");
        assert_eq!(id.name, "n1");
        let error = store.start_identity(Some("n2"), || unreachable!(), 0).expect_err("mismatch");
        assert!(matches!(error, Error::NameMismatch { .. }), "{error}");
    }

    #[test]
    fn second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = NodeStore::open(dir.path()).expect("open");
        let error = NodeStore::open(dir.path()).expect_err("locked");
        assert!(matches!(error, Error::Locked { .. }), "{error}");
    }
}
