//! Replication throttles (Kafka's `leader.replication.throttled.rate` /
//! `follower.replication.throttled.rate` with the topics' `*.replication.throttled.replicas`):
//! bound the bytes per second that replicas out of the ISR, such as those a reassignment
//! adds, copy, so a move does not starve clients. The leader stops sending a throttled
//! replica's partition while its quota is spent; the follower stops asking for it.
//!
//! The quota is a token bucket refilled at the rate, holding at most one second of it; a
//! transfer takes what it needs and may leave the bucket in debt, which later transfers
//! wait out, so over time the bytes copied stay at the rate.

use std::sync::Mutex;
use std::time::Instant;

use gregor_metadata::config::names_replica;
use gregor_metadata::{ConfigResource, MetadataImage};

/// The rate that means "not throttled" (Kafka's default, Long.MAX_VALUE).
pub const UNLIMITED: u64 = i64::MAX as u64;

/// One direction's quota (all throttled partitions of this broker share it).
#[derive(Debug)]
pub struct ReplicationThrottle {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may go now; negative while in debt.
    tokens: f64,
    refilled_at: Instant,
}

impl ReplicationThrottle {
    pub fn new(now: Instant) -> ReplicationThrottle {
        ReplicationThrottle {
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                refilled_at: now,
            }),
        }
    }

    /// Whether the quota at `rate` bytes/s is spent (a throttled transfer must wait).
    pub fn exceeded(&self, rate: u64, now: Instant) -> bool {
        if rate >= UNLIMITED {
            return false;
        }
        self.refill(rate, now).tokens <= 0.0
    }

    /// Takes `bytes` a throttled transfer moved from the quota.
    pub fn record(&self, bytes: usize, rate: u64, now: Instant) {
        if rate >= UNLIMITED || bytes == 0 {
            return;
        }
        self.refill(rate, now).tokens -= bytes as f64;
    }

    fn refill(&self, rate: u64, now: Instant) -> std::sync::MutexGuard<'_, Bucket> {
        let mut b = self.bucket.lock().expect("throttle poisoned");
        let elapsed = now.saturating_duration_since(b.refilled_at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate as f64).min(rate as f64);
        b.refilled_at = now;
        b
    }
}

/// Whether `key` (`leader.` or `follower.replication.throttled.replicas`) of `topic` in
/// `image` throttles replica `broker` of `partition`.
pub fn is_throttled(
    image: &MetadataImage,
    key: &str,
    topic: &str,
    partition: i32,
    broker: i32,
) -> bool {
    image
        .configs
        .get(&ConfigResource::Topic(topic.to_string()))
        .and_then(|c| c.get(key))
        .is_some_and(|list| names_replica(list, partition, broker))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_quota_refills_at_the_rate_and_debt_is_waited_out() {
        let t0 = Instant::now();
        let t = ReplicationThrottle::new(t0);
        assert!(!t.exceeded(UNLIMITED, t0));
        assert!(t.exceeded(1000, t0), "starts empty");
        let t1 = t0 + Duration::from_millis(500);
        assert!(!t.exceeded(1000, t1), "500 bytes came in");
        t.record(2500, 1000, t1); // 2,000 in debt
        assert!(t.exceeded(1000, t1 + Duration::from_millis(1900)));
        assert!(!t.exceeded(1000, t1 + Duration::from_millis(2100)));
        // At most a second of rate is saved up.
        let later = t1 + Duration::from_secs(60);
        t.record(1000, 1000, later);
        assert!(t.exceeded(1000, later));
    }
}
