//! The group coordinator's settings, taken from the broker configuration; a leaf module so
//! the configuration does not depend on the coordinator.

use super::state::GroupLimits;

/// Settings from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    pub limits: GroupLimits,
    pub offsets_partitions: i32,
    pub offset_metadata_max_bytes: usize,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: i64,
    /// How long a commit waits for its records to reach every in-sync replica.
    pub offsets_commit_timeout_ms: u64,
}
