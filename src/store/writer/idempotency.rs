//! Idempotency keys: a create that carries one is remembered in the same transaction as its
//! write; a repeat with the same key and the same request gets the original result without writing
//! again, and the same key with another request is refused.

use super::batch::read;
use super::{Batch, Checked, Write, Written};
use crate::domain::records::{
    Artifact, HitlRequest, IdempotencyRecord, Project, Task, WorkflowRun,
};
use crate::domain::{DomainError, Id, Micros};
use crate::store::codec::{decode, encode};
use crate::store::tables;
use redb::ReadableTable;
use serde::de::DeserializeOwned;

/// How a remembered outcome is stored since remembered keys were bounded: this first byte, the
/// record's id, and for a claim its lease id — about 40 bytes a key, whatever the answer's size.
/// A repeat answers the record as it is now. (An older build stored the whole output, behind the
/// record format's byte; such entries are still answered as they were stored until they expire.)
const REFERENCE: u8 = 2;

/// What a repeat needs to find an outcome again.
pub struct Reference {
    pub id: Id,
    /// A claim's lease: the repeat answers the task only while that claim still holds it.
    pub lease: Option<Id>,
}

/// A command's output that an idempotent repeat can answer again.
pub trait Remembered: serde::Serialize + DeserializeOwned + Send + 'static {
    /// Whether this outcome is remembered (a claim that found nothing is not: a retry may find
    /// work).
    fn remembered(&self) -> bool {
        true
    }
    /// The record it is.
    fn reference(&self) -> Reference;
    /// The record as it is now, for a repeat.
    fn recall(batch: &Batch<'_>, reference: &Reference) -> Checked<Self>;
}

fn plain(id: Id) -> Reference {
    Reference { id, lease: None }
}

fn found<T>(record: Option<T>, kind: &'static str, id: Id) -> Checked<T> {
    record.ok_or_else(|| DomainError::not_found(kind, id).into())
}

impl Remembered for Project {
    fn reference(&self) -> Reference {
        plain(self.id)
    }
    fn recall(batch: &Batch<'_>, r: &Reference) -> Checked<Self> {
        found(read(batch.projects.open()?, &r.id)?, "project", r.id)
    }
}
impl Remembered for Task {
    fn reference(&self) -> Reference {
        plain(self.id)
    }
    fn recall(batch: &Batch<'_>, r: &Reference) -> Checked<Self> {
        found(read(batch.tasks.open()?, &r.id)?, "task", r.id)
    }
}
impl Remembered for Artifact {
    fn reference(&self) -> Reference {
        plain(self.id)
    }
    fn recall(batch: &Batch<'_>, r: &Reference) -> Checked<Self> {
        found(read(batch.artifacts.open()?, &r.id)?, "artifact", r.id)
    }
}
impl Remembered for HitlRequest {
    fn reference(&self) -> Reference {
        plain(self.id)
    }
    fn recall(batch: &Batch<'_>, r: &Reference) -> Checked<Self> {
        found(read(batch.hitl.open()?, &r.id)?, "hitl_request", r.id)
    }
}
impl Remembered for WorkflowRun {
    fn reference(&self) -> Reference {
        plain(self.project_id)
    }
    fn recall(batch: &Batch<'_>, r: &Reference) -> Checked<Self> {
        found(read(batch.workflows.open()?, &r.id)?, "workflow", r.id)
    }
}
impl Remembered for Option<Task> {
    fn remembered(&self) -> bool {
        self.is_some()
    }
    fn reference(&self) -> Reference {
        match self {
            Some(t) => Reference {
                id: t.id,
                lease: t.lease_id,
            },
            None => plain(Id([0; 16])),
        }
    }
    /// The claimed task while the claim still holds it; once its lease is gone (expired,
    /// released, the task finished or claimed again) the repeat is told so.
    fn recall(batch: &Batch<'_>, r: &Reference) -> Checked<Self> {
        let task: Task = found(read(batch.tasks.open()?, &r.id)?, "task", r.id)?;
        if task.status == crate::domain::TaskStatus::Working && task.lease_id == r.lease {
            return Ok(Some(task));
        }
        Err(DomainError::LeaseLost {
            message: format!(
                "the claim this Idempotency-Key made of task {} no longer holds it",
                r.id
            ),
        }
        .into())
    }
}

fn encode_reference(r: &Reference) -> Vec<u8> {
    let mut out = Vec::with_capacity(33);
    out.push(REFERENCE);
    out.extend_from_slice(&r.id.0);
    if let Some(lease) = r.lease {
        out.extend_from_slice(&lease.0);
    }
    out
}

fn decode_reference(bytes: &[u8]) -> Option<Reference> {
    let (&REFERENCE, rest) = bytes.split_first()? else {
        return None;
    };
    let id = Id(rest.get(..16)?.try_into().ok()?);
    let lease = match rest.len() {
        16 => None,
        32 => Some(Id(rest[16..].try_into().ok()?)),
        _ => return None,
    };
    Some(Reference { id, lease })
}

/// `inner`, at most once per `key`: `key` names the route and the client's key, `fingerprint`
/// the request.
pub struct Idempotent<C> {
    pub inner: C,
    /// A digest of the route, the path's project id, the client's `Idempotency-Key` and the name
    /// of the API key that sent it (`api::write_once`).
    pub key: [u8; 20],
    /// A digest of the request body.
    pub fingerprint: [u8; 20],
}

pub enum OncePlan<P, O> {
    Fresh(P, [u8; 20], [u8; 20]),
    Replay(O),
}

impl<C> Write for Idempotent<C>
where
    C: Write,
    C::Output: Remembered,
{
    type Plan = OncePlan<C::Plan, C::Output>;
    type Output = C::Output;

    fn check(self, batch: &Batch<'_>) -> Checked<Self::Plan> {
        if let Some(bytes) = batch.idempotency.open()?.get(&self.key)? {
            let record: IdempotencyRecord = decode(bytes.value())?;
            let fresh_enough = batch.now.saturating_sub(record.at) < batch.shared.idempotency_ttl;
            if fresh_enough {
                if record.fingerprint != self.fingerprint {
                    return Err(DomainError::IdempotencyKeyReused {
                        message: "this Idempotency-Key was used with another request".into(),
                    }
                    .into());
                }
                let output = match decode_reference(&record.output) {
                    Some(reference) => C::Output::recall(batch, &reference)?,
                    // Stored whole by an older build.
                    None => decode(&record.output)?,
                };
                return Ok(OncePlan::Replay(output));
            }
        }
        let plan = self.inner.check(batch)?;
        Ok(OncePlan::Fresh(plan, self.key, self.fingerprint))
    }

    fn apply(plan: Self::Plan, batch: &mut Batch<'_>) -> Written<C::Output> {
        let (plan, key, fingerprint) = match plan {
            OncePlan::Replay(output) => return Ok(output),
            OncePlan::Fresh(plan, key, fingerprint) => (plan, key, fingerprint),
        };
        let output = C::apply(plan, batch)?;
        if output.remembered() {
            // An expired record of the same key goes, with its index entry.
            if let Some(old) = batch.idempotency.open()?.get(&key)? {
                let old: IdempotencyRecord = decode(old.value())?;
                batch
                    .idempotency_by_age
                    .open_mut()?
                    .remove(&tables::idempotency_age_key(old.at, &key))?;
            }
            let record = IdempotencyRecord {
                fingerprint,
                output: encode_reference(&output.reference()),
                at: batch.now,
            };
            batch
                .idempotency
                .open_mut()?
                .insert(&key, encode(&record).as_slice())?;
            batch
                .idempotency_by_age
                .open_mut()?
                .insert(&tables::idempotency_age_key(batch.now, &key), ())?;
            batch.remembered += 1;
        }
        Ok(output)
    }
}

/// Forgets the idempotency keys remembered before `before`, and the oldest beyond the newest
/// `keep`, at most `max` of them; answers how many. No event.
#[derive(Clone, Debug)]
pub struct TrimIdempotency {
    pub before: Micros,
    pub keep: u64,
    pub max: usize,
}

impl Write for TrimIdempotency {
    type Plan = Vec<[u8; 28]>;
    type Output = u64;

    fn check(self, batch: &Batch<'_>) -> Checked<Vec<[u8; 28]>> {
        Ok(forgettable(batch, self.before, self.keep, self.max)?)
    }

    fn apply(doomed: Vec<[u8; 28]>, batch: &mut Batch<'_>) -> Written<u64> {
        forget(batch, &doomed)
    }
}

/// Keys past their lifetime or beyond the limit that one batch forgets besides as many as it
/// remembers, so that keys expire while writes go on without a bulk delete holding them up.
const CATCH_UP: usize = 64;

/// As a batch remembers keys: forgets as many of the oldest as are past their lifetime or beyond
/// `--idempotency-max-keys`, at most as many as it remembered plus `CATCH_UP`. (Keys that expire
/// while none are remembered are forgotten by the background retention.)
pub(super) fn forget_to_limits(batch: &mut Batch<'_>) -> Written<()> {
    if batch.remembered == 0 {
        return Ok(());
    }
    let before = batch.now.saturating_sub(batch.shared.idempotency_ttl);
    let max = batch.remembered + CATCH_UP;
    let doomed = forgettable(batch, before, batch.shared.idempotency_keep, max)?;
    forget(batch, &doomed)?;
    Ok(())
}

/// The oldest keys remembered before `before`, and the oldest beyond the newest `keep`, at most
/// `max` of them (their age-index keys).
fn forgettable(batch: &Batch<'_>, before: Micros, keep: u64, max: usize) -> Written<Vec<[u8; 28]>> {
    use redb::ReadableTableMetadata;
    let excess = batch.idempotency.open()?.len()?.saturating_sub(keep);
    let cut = tables::idempotency_age_key(before, &[0; 20]);
    let mut doomed = Vec::new();
    for entry in batch.idempotency_by_age.open()?.iter()?.take(max) {
        let key = *entry?.0.value();
        if key >= cut && doomed.len() as u64 >= excess {
            break;
        }
        doomed.push(key);
    }
    Ok(doomed)
}

/// Forgets keys given by their age-index keys; answers how many.
fn forget(batch: &mut Batch<'_>, doomed: &[[u8; 28]]) -> Written<u64> {
    for age_key in doomed {
        let mut key = [0u8; 20];
        key.copy_from_slice(&age_key[8..]);
        batch.idempotency.open_mut()?.remove(&key)?;
        batch.idempotency_by_age.open_mut()?.remove(age_key)?;
    }
    Ok(doomed.len() as u64)
}
