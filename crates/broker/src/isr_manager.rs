//! The leader's side of ISR changes (KIP-497): partitions decide that a follower should join
//! (it reached the HW, seen in its fetch) or leave (not caught up for
//! `replica.lag.time.max.ms`, checked every half of that), and this task sends the changes
//! to the active controller as Kafka's AlterPartition requests, several partitions per
//! request. The controller checks the leader and partition epochs and writes the new ISR to
//! the metadata log; the partition takes it from there like any metadata change. A refused
//! or unanswered change is released so the partition may ask again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gregor_metadata::controller::{AlterPartition, AlterPartitionItem};
use tokio::sync::mpsc;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::controller_apis;
use crate::partition::IsrChange;

/// Most partitions one AlterPartition request carries.
const MAX_CHANGES_PER_REQUEST: usize = 1000;

/// The queue of ISR changes partitions ask for.
pub struct IsrManager {
    sender: mpsc::UnboundedSender<IsrChange>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<IsrChange>>>,
}

impl Default for IsrManager {
    fn default() -> IsrManager {
        let (sender, receiver) = mpsc::unbounded_channel();
        IsrManager {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl IsrManager {
    /// Queues a change for the next AlterPartition request.
    pub fn request(&self, change: IsrChange) {
        // The receiver lives as long as the broker's tasks; after shutdown nothing is sent.
        let _ = self.sender.send(change);
    }
}

/// Sends queued ISR changes and checks for lagging followers until shutdown.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let Some(mut queue) = broker
        .isr_manager
        .receiver
        .lock()
        .expect("isr manager lock poisoned")
        .take()
    else {
        return;
    };
    let max_lag_ms = broker.config().replica_lag_time_max_ms();
    let mut checks = tokio::time::interval(Duration::from_millis((max_lag_ms as u64 / 2).max(10)));
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut changes = Vec::new();
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = checks.tick() => {
                let now = broker.clock.now_ms();
                let max_lag_ms = broker.config().replica_lag_time_max_ms();
                changes.extend(broker.replicas.all().iter().filter_map(|p| p.isr_shrink(now, max_lag_ms)));
            }
            Some(change) = queue.recv() => changes.push(change),
        }
        while let Ok(change) = queue.try_recv() {
            changes.push(change);
        }
        if changes.is_empty() {
            continue;
        }
        let sender = broker.clone();
        let sent = tokio::task::spawn_blocking(move || {
            // Bounded requests: a broker rejoining 10,000 ISRs at once sends several.
            let mut changes = changes;
            while !changes.is_empty() {
                let rest = changes.split_off(changes.len().min(MAX_CHANGES_PER_REQUEST));
                send(&sender, changes);
                changes = rest;
            }
        })
        .await;
        if let Err(e) = sent {
            tracing::error!(error = %e, "the AlterPartition task failed");
        }
    }
}

/// One AlterPartition request with `changes`; releases every change not accepted.
fn send(broker: &Broker, changes: Vec<IsrChange>) {
    let image = broker.image();
    let request = AlterPartition {
        broker_id: broker.node_id,
        broker_epoch: broker.lifecycle.epoch(),
        partitions: changes
            .iter()
            .map(|c| AlterPartitionItem {
                topic_id: c.topic_id,
                partition: c.partition,
                leader_epoch: c.leader_epoch,
                partition_epoch: c.partition_epoch,
                new_isr: c
                    .isr
                    .iter()
                    .map(|&id| (id, image.brokers.get(&id).map_or(-1, |b| b.epoch)))
                    .collect(),
            })
            .collect(),
    };
    let frame = controller_apis::alter_partition_frame(&request);
    let outcome = broker
        .seat()
        .call_kafka(frame, Duration::from_secs(5))
        .and_then(|answer| controller_apis::alter_partition_reply(&answer));
    let results = match outcome {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(error = %e, changes = changes.len(), "AlterPartition failed; the partitions will ask again");
            release(broker, &changes);
            return;
        }
    };
    for change in &changes {
        let result = results
            .iter()
            .find(|r| r.topic_id == change.topic_id && r.partition == change.partition);
        match result.map(|r| &r.outcome) {
            Some(Ok(state)) if state.partition_epoch > change.partition_epoch => {
                let before = image
                    .topic_by_id(&change.topic_id)
                    .and_then(|t| t.partitions.get(&change.partition))
                    .map_or(state.isr.len(), |p| p.isr.len());
                broker.metrics.isr_changed(before, state.isr.len());
                tracing::info!(topic = %change.topic, partition = change.partition, isr = ?state.isr, partition_epoch = state.partition_epoch, "ISR changed")
            }
            Some(Ok(_)) => release(broker, std::slice::from_ref(change)),
            Some(Err(e)) => {
                tracing::info!(topic = %change.topic, partition = change.partition, isr = ?change.isr, error = %e, "ISR change refused");
                release(broker, std::slice::from_ref(change));
            }
            None => {
                tracing::warn!(topic = %change.topic, partition = change.partition, "the controller did not answer for the partition");
                release(broker, std::slice::from_ref(change));
            }
        }
    }
}

fn release(broker: &Broker, changes: &[IsrChange]) {
    for c in changes {
        if let Some(p) = broker.replicas.get_by_id((c.topic_id, c.partition)) {
            p.isr_change_failed(c.partition_epoch);
        }
    }
}
