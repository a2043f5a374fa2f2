//! Partitioners. Records with an explicit partition never reach a partitioner.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Chooses the partition of a record that names none.
pub trait Partitioner: Send + Sync {
    /// A partition in `0..num_partitions` (`num_partitions >= 1`).
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        num_partitions: i32,
    ) -> i32;

    /// Told when the batch of `topic`/`partition` has been handed to the network, so
    /// sticky strategies can move on.
    fn on_batch_sent(&self, _topic: &str, _partition: i32) {}
}

/// The 32-bit MurmurHash2 of `data` with seed `0x9747b28c`, as Kafka's Java client computes
/// it for keys (result interpreted as a signed `i32`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % num_partitions
}

/// A small xorshift generator seeded from the process's random hasher keys.
struct Rng(AtomicU64);

impl Rng {
    fn new() -> Rng {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        );
        Rng(AtomicU64::new(h.finish() | 1))
    }

    fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x
    }

    fn below(&self, n: i32) -> i32 {
        (self.next() % n.max(1) as u64) as i32
    }
}

/// Kafka's default strategy: murmur2 of the key when there is one, otherwise a "sticky"
/// random partition kept until its batch is sent.
pub struct DefaultPartitioner {
    sticky: Mutex<HashMap<String, i32>>,
    rng: Rng,
}

impl Default for DefaultPartitioner {
    fn default() -> Self {
        DefaultPartitioner {
            sticky: Mutex::new(HashMap::new()),
            rng: Rng::new(),
        }
    }
}

impl DefaultPartitioner {
    pub fn new() -> DefaultPartitioner {
        DefaultPartitioner::default()
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        _value: Option<&[u8]>,
        num_partitions: i32,
    ) -> i32 {
        if let Some(key) = key {
            return partition_for_key(key, num_partitions);
        }
        let mut sticky = self.sticky.lock().unwrap();
        match sticky.get(topic).copied() {
            Some(p) if (0..num_partitions).contains(&p) => p,
            previous => {
                let avoid = previous.filter(|p| *p < 0).map(|p| -p - 1);
                let mut p = self.rng.below(num_partitions);
                if num_partitions > 1 && Some(p) == avoid {
                    p = (p + 1 + self.rng.below(num_partitions - 1)) % num_partitions;
                }
                sticky.insert(topic.to_string(), p);
                p
            }
        }
    }

    fn on_batch_sent(&self, topic: &str, partition: i32) {
        let mut sticky = self.sticky.lock().unwrap();
        if sticky.get(topic) == Some(&partition) {
            // Pick afresh on the next keyless record, avoiding the same partition when possible.
            sticky.insert(topic.to_string(), -(partition + 1));
        }
    }
}

/// Spreads records over all partitions in turn, ignoring keys.
#[derive(Default)]
pub struct RoundRobinPartitioner {
    counters: Mutex<HashMap<String, u32>>,
}

impl RoundRobinPartitioner {
    pub fn new() -> RoundRobinPartitioner {
        RoundRobinPartitioner::default()
    }
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(
        &self,
        topic: &str,
        _: Option<&[u8]>,
        _: Option<&[u8]>,
        num_partitions: i32,
    ) -> i32 {
        let mut counters = self.counters.lock().unwrap();
        let c = counters.entry(topic.to_string()).or_insert(0);
        let p = (*c % num_partitions as u32) as i32;
        *c = c.wrapping_add(1);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_java_client() {
        let cases: &[(&str, i32)] = &[
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
            ("", 275646681),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()), *expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn keyed_partition_is_positive_murmur_mod_count() {
        for key in ["a", "bb", "ccc", "dddd", "hello world"] {
            let p = partition_for_key(key.as_bytes(), 7);
            assert_eq!(p, (murmur2(key.as_bytes()) & 0x7fffffff) % 7);
            assert!((0..7).contains(&p));
            let dp = DefaultPartitioner::new();
            assert_eq!(dp.partition("t", Some(key.as_bytes()), None, 7), p);
        }
    }

    #[test]
    fn sticky_until_batch_sent() {
        let p = DefaultPartitioner::new();
        let first = p.partition("t", None, None, 8);
        for _ in 0..100 {
            assert_eq!(p.partition("t", None, None, 8), first);
        }
        // Sending another partition's batch does not move the sticky partition.
        p.on_batch_sent("t", (first + 1) % 8);
        assert_eq!(p.partition("t", None, None, 8), first);
        p.on_batch_sent("t", first);
        let mut moved = false;
        for _ in 0..20 {
            let next = p.partition("t", None, None, 8);
            p.on_batch_sent("t", next);
            moved |= next != first;
        }
        assert!(moved, "sticky partition never moved");
    }

    #[test]
    fn round_robin_cycles() {
        let p = RoundRobinPartitioner::new();
        let got: Vec<i32> = (0..6)
            .map(|_| p.partition("t", Some(b"k"), None, 3))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
    }
}
