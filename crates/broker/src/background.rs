//! Periodic broker work: opening replicas that could not be opened, time-based flushes
//! (flush.ms), the recovery-point and
//! log-start-offset checkpoints, retention (log.retention.check.interval.ms) and the log
//! cleaner for compacted topics. Each runs on its configured interval until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::Broker;

/// Longest sleep between checks, so config changes and shutdown are noticed promptly.
const TICK_MAX_MS: u64 = 1_000;

/// Runs the periodic tasks until `shutdown` flips.
pub async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut last_checkpoint_ms = broker.clock.now_ms();
    let mut last_flush_check_ms = broker.clock.now_ms();
    let mut last_retention_ms = broker.clock.now_ms();
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
        let now = broker.clock.now_ms();
        if !broker.replicas.offline().is_empty() {
            let broker = broker.clone();
            let _ = tokio::task::spawn_blocking(move || {
                broker
                    .replicas
                    .retry_offline(&broker.image(), &broker.config())
            })
            .await;
        }
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
                        Ok(n) => {
                            broker.metrics.retention_deleted(n);
                            tracing::info!(topic = %p.topic, partition = p.index, segments = n, "retention deleted segments")
                        }
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
                if let Err(e) = broker.replicas.write_checkpoints(now, expiration) {
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
                let now = broker.clock.now_ms();
                let started = std::time::Instant::now();
                let task = tokio::task::spawn_blocking(move || (p.clean(now, dedupe), p));
                match task.await {
                    Ok((Ok(cleaned), _)) => {
                        if cleaned {
                            broker.metrics.cleaned(started.elapsed());
                        }
                        cleaned_any |= cleaned;
                    }
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

/// Drives the group coordinator's timers until shutdown: sleeps until the earliest
/// deadline, or until a new deadline wakes it early.
pub async fn run_group_timers(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let next = broker.groups.tick(&*broker).unwrap_or(i64::MAX);
        let wait_ms = (next - broker.clock.now_ms()).clamp(1, 60_000) as u64;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = broker.groups.deadline_added() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
        }
    }
}

/// Runs the transaction coordinator's timeout and expiry checks at their configured
/// intervals until shutdown.
pub async fn run_txn_timers(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let config = broker.txns.config();
    let mut last_expiry = broker.clock.now_ms();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(config.abort_check_interval_ms.max(1) as u64)) => {}
        }
        let now = broker.clock.now_ms();
        let expire = now - last_expiry >= config.expiry_check_interval_ms;
        if expire {
            last_expiry = now;
        }
        let b = broker.clone();
        // Marker writes are disk I/O under the coordinator lock: off the async workers.
        let _ = tokio::task::spawn_blocking(move || b.txns.tick(&*b, now, expire)).await;
    }
}
