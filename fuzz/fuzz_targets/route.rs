//! Request routing: any method and path give a route or a clean refusal, never a panic.
#![no_main]

use flightdeck::http::{Method, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (method, path) = text.split_once(' ').unwrap_or(("GET", text));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return };
    if let Ok(matched) = route(&method, path) {
        assert!(!matched.route.name().is_empty());
        assert!(path.contains(matched.param), "the parameter comes from the path");
    }
});
