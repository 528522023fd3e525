//! JSON decoding of every request type, and query strings: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flightdeck::api::fuzz_decode(data);
});
