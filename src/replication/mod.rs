//! Replication between nodes. A leader serves two routes to followers that present the
//! replication key (`api::replication`): a consistent snapshot of its database with the LSN of
//! the last log record it holds, and its write-ahead log from a record on, as a long-lived
//! response of frames (`wire`). A follower (`follower`) starts from the snapshot when its data
//! directory has none, then streams the log and applies each record with the same code as
//! recovery, logged under the leader's LSN (`Store::replicate`), so it resumes from its own LSN
//! after a restart; a follower further behind than the leader keeps records for starts again
//! from a snapshot.

pub mod follower;
pub mod wire;

use subtle::ConstantTimeEq;

/// The header a snapshot's answer names its LSN in.
pub const LSN_HEADER: &str = "flightdeck-lsn";

/// The secret of the replication routes (`--replication-key`).
#[derive(Clone)]
pub struct Key(String);

impl Key {
    pub fn new(secret: String) -> Key {
        Key(secret)
    }

    /// Whether `presented` is this key, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// The `Authorization` header's value that presents it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<secret>)")
    }
}
