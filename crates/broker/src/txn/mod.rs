//! Transactions: the pure state of a transactional id (`state`), the codec of the
//! `__transaction_state` records (`log`), and the coordinator that persists and acts on them
//! (`coordinator`).

pub mod config;
pub mod coordinator;
pub mod log;
pub mod state;
