//! The Gregor broker: network server, request handlers, and the partitions it hosts.
//!
//! Layering: `server` accepts connections and frames requests, `dispatch` guards, decodes
//! and routes them to `handlers`, which act on the shared [`broker::Broker`] state: the
//! controller's metadata image and the [`replica_manager::ReplicaManager`]'s partitions.

pub mod background;
pub mod blocking;
pub mod broker;
pub mod clock;
pub mod cluster_config;
pub mod config;
pub mod controller_apis;
pub mod controller_node;
pub mod controller_seat;
pub mod coordinator_ownership;
pub mod coordinator_services;
pub mod dispatch;
pub mod fd_limit;
pub mod group;
pub mod handlers;
pub mod inter_broker;
pub mod internal_topic;
pub mod isr_manager;
pub mod lifecycle;
pub mod meta_properties;
pub mod metadata_listener;
pub mod metrics;
pub mod metrics_server;
pub mod partition;
pub mod process_stats;
pub mod producer_state;
pub mod record_scan;
pub mod replica_fetcher;
pub mod replica_manager;
pub mod replica_tracker;
pub mod replication_throttle;
pub mod server;
pub mod timed_controller;
pub mod txn;
pub mod zero_copy;

#[cfg(test)]
mod test_batches;

pub use broker::{Broker, BrokerError};
pub use config::BrokerConfig;
pub use server::{start, BrokerHandle};
