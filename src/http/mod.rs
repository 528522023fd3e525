//! The HTTP layer: routing, timing, bodies and the error table. Only this module, `server` and
//! (later) `ws` touch hyper.

pub mod body;
pub mod error;
pub mod router;
pub mod timing;

pub use body::Body;
pub use error::ApiError;
pub use router::{Matched, NoRoute, Route, route};
