//! Idempotency keys: a create that carries one is remembered in the same transaction as its
//! write; a repeat with the same key and the same request gets the original result without writing
//! again, and the same key with another request is refused.

use super::{Batch, Checked, Write, Written};
use crate::domain::records::{
    Artifact, HitlRequest, IdempotencyRecord, Project, Task, WorkflowRun,
};
use crate::domain::{DomainError, Micros};
use crate::store::codec::{decode, encode};
use crate::store::tables;
use redb::ReadableTable;
use serde::de::DeserializeOwned;

/// A command's output that an idempotent repeat can answer again.
pub trait Remembered: serde::Serialize + DeserializeOwned + Send + 'static {
    /// Whether this outcome is remembered (a claim that found nothing is not: a retry may find
    /// work).
    fn remembered(&self) -> bool {
        true
    }
}

impl Remembered for Project {}
impl Remembered for Task {}
impl Remembered for Artifact {}
impl Remembered for HitlRequest {}
impl Remembered for WorkflowRun {}
impl Remembered for Option<Task> {
    fn remembered(&self) -> bool {
        self.is_some()
    }
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
        if let Some(bytes) = batch.idempotency.get(&self.key)? {
            let record: IdempotencyRecord = decode(bytes.value())?;
            let fresh_enough = batch.now.saturating_sub(record.at) < batch.shared.idempotency_ttl;
            if fresh_enough {
                if record.fingerprint != self.fingerprint {
                    return Err(DomainError::IdempotencyKeyReused {
                        message: "this Idempotency-Key was used with another request".into(),
                    }
                    .into());
                }
                return Ok(OncePlan::Replay(decode(&record.output)?));
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
            if let Some(old) = batch.idempotency.get(&key)? {
                let old: IdempotencyRecord = decode(old.value())?;
                batch
                    .idempotency_by_age
                    .remove(&tables::idempotency_age_key(old.at, &key))?;
            }
            let record = IdempotencyRecord {
                fingerprint,
                output: encode(&output),
                at: batch.now,
            };
            batch.idempotency.insert(&key, encode(&record).as_slice())?;
            batch
                .idempotency_by_age
                .insert(&tables::idempotency_age_key(batch.now, &key), ())?;
        }
        Ok(output)
    }
}

/// Forgets the idempotency keys remembered before `before`, at most `max` of them; answers how
/// many. No event.
#[derive(Clone, Debug)]
pub struct TrimIdempotency {
    pub before: Micros,
    pub max: usize,
}

impl Write for TrimIdempotency {
    type Plan = Vec<[u8; 28]>;
    type Output = u64;

    fn check(self, batch: &Batch<'_>) -> Checked<Vec<[u8; 28]>> {
        let hi = tables::idempotency_age_key(self.before, &[0; 20]);
        let mut doomed = Vec::new();
        for entry in batch
            .idempotency_by_age
            .range::<&[u8; 28]>(..&hi)?
            .take(self.max)
        {
            doomed.push(*entry?.0.value());
        }
        Ok(doomed)
    }

    fn apply(doomed: Vec<[u8; 28]>, batch: &mut Batch<'_>) -> Written<u64> {
        for age_key in &doomed {
            let mut key = [0u8; 20];
            key.copy_from_slice(&age_key[8..]);
            batch.idempotency.remove(&key)?;
            batch.idempotency_by_age.remove(age_key)?;
        }
        Ok(doomed.len() as u64)
    }
}
