//! The broker's one clock, injected: created once (the system clock, or a manual one in
//! tests) and passed to every component that reads the time, so timing logic can be tested
//! without sleeping. The type lives in the storage crate, the lowest layer that needs time.

pub use gregor_storage::clock::{system, Clock, ManualClock, SharedClock, SystemClock};
