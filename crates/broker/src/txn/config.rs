//! The transaction coordinator's settings, taken from the broker configuration; a leaf
//! module so the configuration does not depend on the coordinator.

/// Settings from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    pub state_partitions: i32,
    pub max_timeout_ms: i32,
    pub id_expiration_ms: i64,
    pub abort_check_interval_ms: i64,
    pub expiry_check_interval_ms: i64,
}
