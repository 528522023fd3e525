//! Record encoding: one format-version byte, then postcard.

use serde::{Serialize, de::DeserializeOwned};

use super::StoreError;

/// The current record format. A record with another first byte is refused, never guessed at.
pub const RECORD_FORMAT: u8 = 1;

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(RECORD_FORMAT);
    // Serialising plain structs into a Vec cannot fail: no maps with non-string keys, no I/O.
    postcard::to_io(record, &mut out).expect("postcard encoding into a Vec");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT, body)) => postcard::from_bytes(body)
            .map_err(|e| StoreError::Corrupt(format!("undecodable record: {e}"))),
        Some((version, _)) => Err(StoreError::Corrupt(format!(
            "record format {version} is not supported (this build reads format {RECORD_FORMAT})"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}
