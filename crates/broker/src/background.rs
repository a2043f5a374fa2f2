//! Periodic broker work: time-based flushes (flush.ms) and the recovery-point and
//! log-start-offset checkpoints. Each runs on its configured interval until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::Broker;
use crate::handlers::now_ms;

/// Longest sleep between checks, so config changes and shutdown are noticed promptly.
const TICK_MAX_MS: u64 = 1_000;

/// Runs the periodic tasks until `shutdown` flips.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut last_checkpoint_ms = now_ms();
    let mut last_flush_check_ms = now_ms();
    loop {
        let config = broker.config();
        let flush_every = config.flush_scheduler_interval_ms();
        let checkpoint_every = config.checkpoint_interval_ms();
        let tick = flush_every.min(checkpoint_every).clamp(1, TICK_MAX_MS);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(tick)) => {}
        }
        let now = now_ms();
        if (now - last_flush_check_ms) as u64 >= flush_every {
            last_flush_check_ms = now;
            let broker = broker.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for p in broker.replicas.all() {
                    if let Err(e) = p.flush_if_due(now) {
                        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
                    }
                }
            })
            .await;
        }
        if (now - last_checkpoint_ms) as u64 >= checkpoint_every {
            last_checkpoint_ms = now;
            let broker = broker.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = broker.replicas.write_checkpoints() {
                    tracing::error!(error = %e, "writing checkpoints failed");
                }
            })
            .await;
        }
    }
}
