//! Kafka wire protocol for Gregor: framing, the request guard that checks a frame before the
//! codec crate decodes it, the table of implemented API versions, and Kafka's error names.
//!
//! Message encoding itself is delegated to the `kafka-protocol` crate; this crate owns what
//! that crate does not do safely or at all.

pub mod errors;
pub mod frame;
pub mod guard;
pub mod versions;
