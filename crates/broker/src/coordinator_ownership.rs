//! The coordinators follow the leadership of their internal partitions, as Kafka's
//! coordinators follow elections: after every published metadata change the group and
//! transaction coordinators load the `__consumer_offsets` / `__transaction_state`
//! partitions this broker now leads (answering their keys COORDINATOR_LOAD_IN_PROGRESS
//! until replayed; prepared transactions are then finished) and unload those it no longer
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
        let _ = tokio::task::spawn_blocking(move || {
            b.groups.sync_ownership(&*b);
            b.txns.sync_ownership(&*b);
        })
        .await;
    }
}
