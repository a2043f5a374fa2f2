//! Periodic broker work: time-based flushes (flush.ms), the recovery-point and
//! log-start-offset checkpoints, retention (log.retention.check.interval.ms) and the log
//! cleaner for compacted topics. Each runs on its configured interval until shutdown.

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
    let mut last_retention_ms = now_ms();
    loop {
        let config = broker.config();
        let flush_every = config.flush_scheduler_interval_ms();
        let checkpoint_every = config.checkpoint_interval_ms();
        let tick = flush_every
            .min(checkpoint_every)
            .min(config.retention_check_interval_ms())
            .clamp(1, TICK_MAX_MS);
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
        if (now - last_retention_ms) as u64 >= config.retention_check_interval_ms() {
            last_retention_ms = now;
            let broker = broker.clone();
            let _ = tokio::task::spawn_blocking(move || {
                for p in broker.replicas.all() {
                    match p.apply_retention(now) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(topic = %p.topic, partition = p.index, segments = n, "retention deleted segments"),
                        Err(e) => tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed"),
                    }
                }
            })
            .await;
        }
        if (now - last_checkpoint_ms) as u64 >= checkpoint_every {
            last_checkpoint_ms = now;
            let broker = broker.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let expiration = broker.config().producer_id_expiration_ms();
                if let Err(e) = broker.replicas.write_checkpoints(expiration) {
                    tracing::error!(error = %e, "writing checkpoints failed");
                }
            })
            .await;
        }
    }
}

/// The log cleaner: compacts one partition at a time, pausing log.cleaner.backoff.ms when no
/// partition needed cleaning. The rewrite runs on a blocking thread without the partition's
/// lock (see `Partition::clean`).
pub async fn run_cleaner(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let config = broker.config();
        let mut cleaned_any = false;
        if config.cleaner_enabled() {
            let dedupe = config.cleaner_dedupe_buffer_bytes();
            for p in broker.replicas.all() {
                if !p.with_log(|log| log.config().cleanup_compact) {
                    continue;
                }
                if *shutdown.borrow() {
                    return;
                }
                let task = tokio::task::spawn_blocking(move || (p.clean(now_ms(), dedupe), p));
                match task.await {
                    Ok((Ok(cleaned), _)) => cleaned_any |= cleaned,
                    Ok((Err(e), p)) => {
                        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "cleaning failed")
                    }
                    Err(e) => tracing::error!(error = %e, "cleaner task failed"),
                }
            }
        }
        let pause = if cleaned_any {
            0
        } else {
            config.cleaner_backoff_ms().max(1)
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
        }
    }
}
