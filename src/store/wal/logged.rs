//! The writer's transaction with a recorder: every insert and removal a batch makes, in every
//! table, is written into the batch's log record as it is made. The writer only ever sees its
//! tables through `Logged`, which lends the table for reading but takes writes itself, so no write
//! can reach the database without reaching the log.

use std::borrow::Borrow;
use std::cell::RefCell;

use redb::{AccessGuard, Key, StorageError, Table, TableDefinition, TableHandle, Value};

use crate::store::StoreError;

/// An operation's tag in a record.
pub(super) const OP_INSERT: u8 = 1;
pub(super) const OP_REMOVE: u8 = 2;

/// A write transaction whose table writes are recorded.
pub(crate) struct LoggedTxn {
    txn: redb::WriteTransaction,
    ops: RefCell<Vec<u8>>,
}

impl LoggedTxn {
    pub(crate) fn new(txn: redb::WriteTransaction) -> LoggedTxn {
        // The record's head goes in front of its operations (`Wal::append` fills it in).
        let mut ops = Vec::with_capacity(4096);
        ops.resize(super::FRAME_HEAD, 0);
        LoggedTxn {
            txn,
            ops: RefCell::new(ops),
        }
    }

    /// Opens a table whose writes go into the record.
    pub(crate) fn open_table<'t, K: Key + 'static, V: Value + 'static>(
        &'t self,
        definition: TableDefinition<K, V>,
    ) -> Result<Logged<'t, K, V>, redb::TableError> {
        let name = definition.name();
        debug_assert!(name.len() <= usize::from(u8::MAX));
        Ok(Logged {
            table: self.txn.open_table(definition)?,
            name: name.to_string(),
            ops: &self.ops,
        })
    }

    /// Applies the operations of another node's record (a leader's, on a follower) and makes
    /// them this record's: `each` sees every operation once applied, with whether its key held
    /// a value before.
    pub(crate) fn replay(
        &self,
        payload: &[u8],
        mut each: impl FnMut(&Op<'_>, bool) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        {
            let mut replay = Replay::new(&self.txn);
            for op in ops(payload) {
                let op = op.map_err(StoreError::Corrupt)?;
                let existed = replay.apply(&op)?;
                each(&op, existed)?;
            }
        }
        self.ops.borrow_mut().extend_from_slice(payload);
        Ok(())
    }

    /// The transaction (for what the log does not record: the record's own number) and the
    /// record: `FRAME_HEAD` bytes left for its head, then the operations, in order.
    pub(crate) fn into_parts(self) -> (redb::WriteTransaction, Vec<u8>) {
        (self.txn, self.ops.into_inner())
    }
}

/// A table of a `LoggedTxn`: reads go straight to the table (`Deref`), writes are recorded.
pub(crate) struct Logged<'t, K: Key + 'static, V: Value + 'static> {
    table: Table<'t, K, V>,
    name: String,
    ops: &'t RefCell<Vec<u8>>,
}

impl<'t, K: Key + 'static, V: Value + 'static> std::ops::Deref for Logged<'t, K, V> {
    type Target = Table<'t, K, V>;

    fn deref(&self) -> &Table<'t, K, V> {
        &self.table
    }
}

impl<K: Key + 'static, V: Value + 'static> Logged<'_, K, V> {
    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        {
            let key_bytes = K::as_bytes(key.borrow());
            let value_bytes = V::as_bytes(value.borrow());
            let mut ops = self.ops.borrow_mut();
            push_op(
                &mut ops,
                OP_INSERT,
                &self.name,
                key_bytes.as_ref(),
                Some(value_bytes.as_ref()),
            );
        }
        self.table.insert(key, value)
    }

    pub(crate) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        {
            let key_bytes = K::as_bytes(key.borrow());
            let mut ops = self.ops.borrow_mut();
            push_op(&mut ops, OP_REMOVE, &self.name, key_bytes.as_ref(), None);
        }
        self.table.remove(key)
    }
}

/// One operation: its tag, the table's name (a length byte, then the name), the key and, for an
/// insert, the value (each a 4-byte little-endian length, then the bytes).
fn push_op(ops: &mut Vec<u8>, tag: u8, table: &str, key: &[u8], value: Option<&[u8]>) {
    ops.reserve(1 + 1 + table.len() + 4 + key.len() + value.map_or(0, |v| 4 + v.len()));
    ops.push(tag);
    ops.push(table.len() as u8);
    ops.extend_from_slice(table.as_bytes());
    ops.extend_from_slice(&(key.len() as u32).to_le_bytes());
    ops.extend_from_slice(key);
    if let Some(value) = value {
        ops.extend_from_slice(&(value.len() as u32).to_le_bytes());
        ops.extend_from_slice(value);
    }
}

/// One operation read back from a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Op<'a> {
    pub table: &'a str,
    pub key: &'a [u8],
    /// `None` for a removal.
    pub value: Option<&'a [u8]>,
}

/// The operations of a record's payload, in order; an error names what is malformed.
pub(crate) fn ops(mut payload: &[u8]) -> impl Iterator<Item = Result<Op<'_>, String>> {
    std::iter::from_fn(move || {
        if payload.is_empty() {
            return None;
        }
        let op = read_op(&mut payload);
        if op.is_err() {
            payload = &[];
        }
        Some(op)
    })
}

fn read_op<'a>(payload: &mut &'a [u8]) -> Result<Op<'a>, String> {
    fn take<'a>(payload: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if payload.len() < n {
            return Err(format!("an operation's {what} runs past the record's end"));
        }
        let (head, rest) = payload.split_at(n);
        *payload = rest;
        Ok(head)
    }
    fn len(payload: &mut &[u8], what: &str) -> Result<usize, String> {
        let bytes = take(payload, 4, what)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    }
    let tag = take(payload, 1, "tag")?[0];
    let name_len = take(payload, 1, "table name length")?[0];
    let name = take(payload, usize::from(name_len), "table name")?;
    let table = std::str::from_utf8(name).map_err(|_| "a table name is not UTF-8".to_string())?;
    let key_len = len(payload, "key length")?;
    let key = take(payload, key_len, "key")?;
    let value = match tag {
        OP_INSERT => {
            let value_len = len(payload, "value length")?;
            Some(take(payload, value_len, "value")?)
        }
        OP_REMOVE => None,
        other => return Err(format!("unknown operation {other}")),
    };
    Ok(Op { table, key, value })
}

/// A table the replay has open: operations read from the log, applied as puts and removals of
/// whole values, typed by the table's definition.
trait Replayed {
    /// Whether the key held a value before.
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError>;
}

impl<K: Key + 'static, V: Value + 'static> Replayed for Table<'_, K, V> {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<bool, StoreError> {
        let key = K::from_bytes(key);
        Ok(match value {
            Some(value) => self.insert(key, V::from_bytes(value))?.is_some(),
            None => self.remove(key)?.is_some(),
        })
    }
}

/// The replay's side of a write transaction: each table opened once, on its first operation,
/// and kept open until the replay is dropped (opening a table per operation cost about as much as
/// the operation).
pub(super) struct Replay<'t> {
    txn: &'t redb::WriteTransaction,
    open: Vec<(String, Box<dyn Replayed + 't>)>,
}

impl<'t> Replay<'t> {
    pub(super) fn new(txn: &'t redb::WriteTransaction) -> Replay<'t> {
        Replay {
            txn,
            open: Vec::new(),
        }
    }

    /// Applies one operation read from the log to the table it names; whether its key held a
    /// value before.
    pub(super) fn apply(&mut self, op: &Op<'_>) -> Result<bool, StoreError> {
        let i = match self.open.iter().position(|(name, _)| name == op.table) {
            Some(i) => i,
            None => {
                let table = self.open_named(op.table)?;
                self.open.push((op.table.to_string(), table));
                self.open.len() - 1
            }
        };
        self.open[i].1.apply(op.key, op.value)
    }

    fn open_named(&self, name: &str) -> Result<Box<dyn Replayed + 't>, StoreError> {
        use crate::store::tables;
        macro_rules! by_name {
            ($table:ident) => {
                if name == tables::$table.name() {
                    return Ok(Box::new(self.txn.open_table(tables::$table)?));
                }
            };
        }
        tables::for_each_table!(by_name);
        Err(StoreError::Corrupt(format!(
            "an operation names the table {name:?}, which this build does not have"
        )))
    }
}
