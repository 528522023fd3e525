//! WebSocket client messages and close frames: an error frame or a valid close code, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flightdeck::ws::fuzz_client_input(data);
});
