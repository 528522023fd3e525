//! The store's errors. A failure below the store (redb, the file system) keeps its source error
//! (`Cause`), shared cheaply among the callers of a failed batch.

use std::sync::Arc;

use crate::domain::DomainError;

/// Why the storage below the store failed: what was being done, and the error that said so.
/// `Error::source` reaches the original (redb's, the operating system's); cloning shares it, so
/// every caller of a failed batch gets the same cause.
#[derive(Clone, Debug)]
pub struct Cause {
    what: Option<String>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Cause {
    /// A failure told by an error.
    pub fn of(source: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause {
            what: None,
            source: Some(Arc::new(source)),
        }
    }

    /// A failure while doing `what`, told by an error.
    pub fn while_(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Cause {
        Cause {
            what: Some(what.into()),
            source: Some(Arc::new(source)),
        }
    }

    /// A failure the store found itself, with no error below it.
    pub fn found(what: impl Into<String>) -> Cause {
        Cause {
            what: Some(what.into()),
            source: None,
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.what, &self.source) {
            (Some(what), Some(source)) => write!(f, "{what}: {source}"),
            (Some(what), None) => f.write_str(what),
            (None, Some(source)) => write!(f, "{source}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("storage error: {0}")]
    Storage(#[source] Cause),
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the database has schema version {found}, newer than this build supports ({supported}); \
         use a newer flightdeck"
    )]
    NewerSchema { found: u64, supported: u64 },
    #[error("the writer queue is full; retry shortly")]
    Overloaded,
    #[error("the writer has stopped")]
    WriterGone,
    /// A write committed on the leader that not enough followers held in time.
    #[error("{0}")]
    NotReplicated(String),
    /// A write sent to a follower; the leader's URL.
    #[error("this node is a follower of {0}; writes go to the leader")]
    NotLeader(String),
    #[error("invalid cursor")]
    InvalidCursor,
    /// The disk is full: nothing was written; writes succeed again once space returns.
    #[error("the disk is full: {0}")]
    DiskFull(#[source] Cause),
    /// The database is being reopened after an I/O error.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// A copy of a batch's failure for each of its callers, with the same cause.
    pub(crate) fn for_caller(&self) -> StoreError {
        match self {
            StoreError::DiskFull(cause) => StoreError::DiskFull(cause.clone()),
            StoreError::Storage(cause) => StoreError::Storage(cause.clone()),
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::NotLeader(l) => StoreError::NotLeader(l.clone()),
            StoreError::NotReplicated(m) => StoreError::NotReplicated(m.clone()),
            other => StoreError::Storage(Cause::found(other.to_string())),
        }
    }

    /// A storage failure while doing `what`, told by `source`.
    pub(crate) fn storage(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Storage(Cause::while_(what, source))
    }
}

fn is_storage_full(e: &redb::StorageError) -> bool {
    matches!(e, redb::StorageError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull)
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> StoreError {
        if is_storage_full(&e) {
            StoreError::DiskFull(Cause::of(e))
        } else {
            StoreError::Storage(Cause::of(e))
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> StoreError {
        match e {
            redb::CommitError::Storage(s) => s.into(),
            other => StoreError::Storage(Cause::of(other)),
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> StoreError {
        match e {
            redb::TransactionError::Storage(s) => s.into(),
            other => StoreError::Storage(Cause::of(other)),
        }
    }
}

macro_rules! storage_error_from {
    ($($t:ty),+) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Storage(Cause::of(e))
            }
        }
    )+};
}
storage_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TableError,
    redb::SetDurabilityError,
    std::io::Error
);

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    /// The innermost error of a chain.
    fn root<'a>(e: &'a (dyn Error + 'static)) -> &'a (dyn Error + 'static) {
        let mut e = e;
        while let Some(next) = e.source() {
            e = next;
        }
        e
    }

    #[test]
    fn a_storage_failure_keeps_its_source_for_every_caller() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no entry");
        let error = StoreError::storage("cannot open /data/flightdeck.redb", io);
        assert_eq!(
            error.to_string(),
            "storage error: cannot open /data/flightdeck.redb: no entry"
        );
        let kind = |e: &StoreError| {
            root(e)
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind)
        };
        assert_eq!(kind(&error), Some(std::io::ErrorKind::PermissionDenied));
        // Each caller of a failed batch gets the same cause, source included.
        let copy = error.for_caller();
        assert_eq!(copy.to_string(), error.to_string());
        assert_eq!(kind(&copy), Some(std::io::ErrorKind::PermissionDenied));
    }

    #[test]
    fn a_full_disk_is_told_apart_and_keeps_the_io_error() {
        let full = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
        let error = StoreError::from(redb::StorageError::Io(full));
        assert!(matches!(error, StoreError::DiskFull(_)), "{error:?}");
        // redb's error is the root (it names no source of its own), holding the I/O error.
        let Some(redb::StorageError::Io(io)) = root(&error).downcast_ref::<redb::StorageError>()
        else {
            panic!("the cause is not redb's: {error:?}");
        };
        assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
        assert!(matches!(error.for_caller(), StoreError::DiskFull(_)));
        // Found by the store itself: no source below it.
        let found = StoreError::Storage(Cause::found("no database at /x"));
        assert!(found.source().unwrap().source().is_none());
        assert_eq!(found.to_string(), "storage error: no database at /x");
    }
}
