//! The coordinators follow the leadership of their internal partitions, as Kafka's
//! coordinators follow elections: after every published metadata change the group
//! coordinator loads the `__consumer_offsets` partitions this broker now leads (answering
//! their groups COORDINATOR_LOAD_IN_PROGRESS until replayed) and unloads those it no longer
//! leads (NOT_COORDINATOR: the clients look the coordinator up again and find the new
//! leader). Loading reads the log, so it runs here, off the metadata listener's thread,
//! one change after another.

use std::sync::Arc;

use tokio::sync::watch;

use crate::broker::Broker;

/// Re-syncs the coordinators with partition leadership after every metadata publication,
/// until shutdown.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut published = broker.subscribe_metadata();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = published.changed() => if changed.is_err() { return },
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.groups.sync_ownership(&*b)).await;
    }
}
