//! Backups: a consistent copy of every table, taken inside one read transaction (so the server
//! keeps serving while it runs), written to a fresh file — which is also compact. Restore puts such
//! a file in place as a data directory's database.

use std::path::Path;

use redb::{Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value};

use super::{Cause, DB_FILE, Store, StoreError, tables};

/// Copies one table.
fn copy<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = from.open_table(def)?;
    let mut target = to.open_table(def)?;
    let mut n = 0;
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
        n += 1;
    }
    Ok(n)
}

/// Writes every table of the snapshot `from` into a new database at `to` (which must not exist).
fn snapshot(from: &ReadTransaction, to: &Path) -> Result<u64, StoreError> {
    if to.exists() {
        return Err(StoreError::Storage(Cause::found(format!(
            "{} already exists",
            to.display()
        ))));
    }
    let target = redb::Database::create(to)?;
    super::shared::private_file(to)?;
    let txn = target.begin_write()?;
    let mut records = 0;
    macro_rules! copy_table {
        ($table:ident) => {
            records += copy(from, &txn, tables::$table)?;
        };
    }
    tables::for_each_table!(copy_table);
    txn.commit()?;
    Ok(records)
}

impl Store {
    /// An online backup: a consistent snapshot of everything committed so far, written to `to`.
    /// Reads never block the writer, so the server keeps serving.
    pub fn backup_to(&self, to: &Path) -> Result<u64, StoreError> {
        let txn = self.shared.database()?.begin_read()?;
        snapshot(&txn, to)
    }

    /// A consistent snapshot of everything committed so far, written to `to` (which must not
    /// exist): its records, and the LSN of the last log record it holds, from which a follower
    /// streams on. Reads never block the writer.
    pub fn snapshot_to(&self, to: &Path) -> Result<(u64, u64), StoreError> {
        let txn = self.shared.database()?.begin_read()?;
        let lsn = txn
            .open_table(tables::META)?
            .get(tables::META_WAL_LSN)?
            .map_or(0, |v| v.value());
        let records = snapshot(&txn, to)?;
        Ok((records, lsn))
    }
}

/// An offline backup of a data directory (the server must not be running on it).
pub fn backup_database(data_dir: &Path, to: &Path) -> Result<u64, StoreError> {
    // What the write-ahead log holds beyond the database's durable state is part of the backup.
    let db = super::open_recovered(data_dir)?;
    let txn = db.begin_read()?;
    snapshot(&txn, to)
}

/// Puts a backup in place as `data_dir`'s database. Refuses a directory that already holds one
/// unless `force`; the backup is checked before it is used.
pub fn restore_database(
    from: &Path,
    data_dir: &Path,
    force: bool,
) -> Result<super::CheckReport, StoreError> {
    let target = data_dir.join(DB_FILE);
    if target.exists() && !force {
        return Err(StoreError::Storage(Cause::found(format!(
            "{} already holds a database; pass --force to replace it",
            data_dir.display()
        ))));
    }
    if target.exists()
        && let Err(redb::DatabaseError::DatabaseAlreadyOpen) = redb::Database::open(&target)
    {
        // A running server holds it (redb locks its file): replaced under the server, every
        // write it acknowledged after would vanish at its next start. An unreadable database
        // is what a restore is for, and is replaced.
        return Err(StoreError::Storage(Cause::found(format!(
            "{} is in use by a running flightdeck; stop it before restoring",
            data_dir.display()
        ))));
    }
    super::shared::private_dir(data_dir)?;
    let staging = data_dir.join(format!("{DB_FILE}.restoring"));
    let _ = std::fs::remove_file(&staging);
    std::fs::copy(from, &staging)?;
    let staging_dir = tempfile_dir(&staging)?;
    let report = super::check::check_database(&staging_dir)?;
    let _ = std::fs::remove_dir_all(&staging_dir);
    if !report.is_consistent() {
        let _ = std::fs::remove_file(&staging);
        return Err(StoreError::Corrupt(format!(
            "the backup is inconsistent: {}",
            report.problems.join("; ")
        )));
    }
    // The log of the database replaced must not be replayed into the backup: its segments go
    // first (the restored database starts a log of its own).
    let log = data_dir.join(super::WAL_DIR);
    if log.exists() {
        std::fs::remove_dir_all(&log)?;
    }
    std::fs::rename(&staging, &target)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(report)
}

/// `check_database` takes a directory: give the staged file one of its own (a hard link).
fn tempfile_dir(staged: &Path) -> Result<std::path::PathBuf, StoreError> {
    let dir = staged.with_extension("check");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::hard_link(staged, dir.join(DB_FILE))?;
    Ok(dir)
}

/// Rewrites the database compactly in place (offline): redb files do not shrink by themselves.
pub fn compact_database(data_dir: &Path) -> Result<(u64, u64), StoreError> {
    let path = data_dir.join(DB_FILE);
    let before = std::fs::metadata(&path)?.len();
    let mut db = super::open_recovered(data_dir)?;
    db.compact()
        .map_err(|e| StoreError::storage("compaction failed", e))?;
    drop(db);
    Ok((before, std::fs::metadata(&path)?.len()))
}
