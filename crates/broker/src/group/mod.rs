//! Consumer group coordination: the classic protocol's state machine (`state`), the
//! coordinator that runs it with timers and persistence (`coordinator`), and the codec of the
//! `__consumer_offsets` records it persists (`offsets_log`).

pub mod config;
pub mod coordinator;
pub mod offsets_log;
pub mod state;
