//! The state a producer handle shares with its sender task: configuration, cluster view,
//! the accumulator's state and the producer's metrics. Internal: the sender and the
//! transaction code use it without going through the producer's public façade.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::accumulator::State;
use crate::config::ProducerConfig;
use crate::metadata::Cluster;
use crate::partitioner::Partitioner;

#[derive(Default)]
pub(crate) struct MetricsInner {
    pub records_sent: u64,
    pub bytes_sent: u64,
    pub batches_sent: u64,
    pub requests: u64,
    pub latency_total: Duration,
    pub latency_max: Duration,
    pub record_errors: u64,
    pub retries: u64,
}

/// State shared by the producer handle and its sender task.
pub(crate) struct Inner {
    pub config: ProducerConfig,
    pub cluster: Cluster,
    pub partitioner: Arc<dyn Partitioner>,
    pub state: Mutex<State>,
    /// Mirrors `State::closed` (set together with it) so `send` can check it without the lock.
    pub closed: AtomicBool,
    /// Woken on any change the sender might act on.
    pub wake_sender: Notify,
    /// Woken whenever batches complete (memory freed, flush progress).
    pub completed: Notify,
    pub metrics: Mutex<MetricsInner>,
    /// The cached connection to the transaction coordinator (transactional producers).
    pub txn_coordinator: tokio::sync::Mutex<Option<Arc<crate::connection::Connection>>>,
}

impl Inner {
    /// Waits until `cond` holds or `deadline` passes; returns whether it holds.
    pub async fn wait_for(
        &self,
        deadline: Instant,
        mut cond: impl FnMut(&mut State) -> bool,
    ) -> bool {
        loop {
            let notified = self.completed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(&mut self.state.lock().unwrap()) {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return cond(&mut self.state.lock().unwrap());
            }
        }
    }
}
