//! The record codec on corrupt bytes: errors, never panics, never an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flightdeck::store::fuzz_decode_records(data);
});
