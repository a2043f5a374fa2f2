//! What the group and transaction coordinators need of the broker around them, and nothing
//! more: their own partitions to replay and append to, transaction markers written to the
//! partitions of a transaction, the metadata's view of which partitions exist, and fresh
//! producer ids.
//!
//! The coordinators take this trait instead of the whole broker, so they do not depend on
//! it (no import circle). The broker's implementation routes what spans brokers: a marker
//! for a partition led elsewhere becomes WriteTxnMarkers to its leader.

use std::sync::Arc;

use crate::partition::Partition;

/// A transaction marker for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// The broker's services to its coordinators.
pub trait CoordinatorServices: Send + Sync {
    /// The partition `topic`-`index` if this broker hosts it (an internal topic's, for
    /// replay and appends).
    fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>>;

    /// Whether the metadata knows partition `topic`-`index`.
    fn partition_exists(&self, topic: &str, index: i32) -> bool;

    /// How many partitions `topic` has, if it exists. A coordinator places keys by the
    /// count its topic was created with, whatever the configuration says today.
    fn partition_count(&self, topic: &str) -> Option<i32>;

    /// Writes `marker` to `topic`-`index` and lets the partition's own coordinator (of
    /// committed offsets, on `__consumer_offsets`) act on it. `Ok(None)`: the partition no
    /// longer exists, nothing to mark.
    fn write_txn_marker(
        &self,
        topic: &str,
        index: i32,
        marker: TxnMarker,
        now_ms: i64,
    ) -> Result<Option<i64>, String>;

    /// The effective `min.insync.replicas` of `topic` (a coordinator's writes need it).
    fn min_insync_replicas(&self, topic: &str) -> usize;

    /// A producer id never handed out before.
    fn next_producer_id(&self) -> Result<i64, String>;
}
