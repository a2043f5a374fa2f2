//! The producer's Produce requests outstanding per broker: how many (bounded by
//! `max.in.flight.requests.per.connection`), which partitions they carry, and how long the
//! broker has been silent. A broker that stops answering without closing its connections
//! (hung, paused, or cut off) is noticed here, so that the sender can ask another broker
//! whether the partitions it waits on have moved instead of waiting out
//! `request.timeout.ms`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::record::Tp;

/// Requests outstanding at one broker.
#[derive(Debug)]
struct NodeRequests {
    requests: usize,
    /// When the broker last answered one of our requests, or when the first of the
    /// outstanding ones was sent if it has not answered since.
    heard_at: Instant,
    /// Partitions with a batch in those requests, each with its number of batches.
    partitions: HashMap<Tp, usize>,
}

/// Produce requests outstanding, per broker node id.
#[derive(Debug, Default)]
pub struct InFlight {
    nodes: HashMap<i32, NodeRequests>,
    total: usize,
}

impl InFlight {
    /// Produce requests outstanding at `node`.
    pub fn at(&self, node: i32) -> usize {
        self.nodes.get(&node).map_or(0, |n| n.requests)
    }

    /// Produce requests outstanding overall.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Records one request sent to `node` carrying batches of `partitions`.
    pub fn sent<'a>(
        &mut self,
        node: i32,
        partitions: impl IntoIterator<Item = &'a Tp>,
        now: Instant,
    ) {
        let n = self.nodes.entry(node).or_insert_with(|| NodeRequests {
            requests: 0,
            heard_at: now,
            partitions: HashMap::new(),
        });
        n.requests += 1;
        for tp in partitions {
            *n.partitions.entry(tp.clone()).or_insert(0) += 1;
        }
        self.total += 1;
    }

    /// Records that the request to `node` carrying `partitions` ended (answered or failed).
    pub fn ended<'a>(
        &mut self,
        node: i32,
        partitions: impl IntoIterator<Item = &'a Tp>,
        now: Instant,
    ) {
        let Some(n) = self.nodes.get_mut(&node) else {
            debug_assert!(
                false,
                "a request ended at node {node} with none outstanding"
            );
            return;
        };
        assert!(
            n.requests > 0 && self.total > 0,
            "in-flight count underflow"
        );
        n.requests -= 1;
        self.total -= 1;
        n.heard_at = now;
        for tp in partitions {
            if let Some(count) = n.partitions.get_mut(tp) {
                *count -= 1;
                if *count == 0 {
                    n.partitions.remove(tp);
                }
            }
        }
        if n.requests == 0 {
            debug_assert!(n.partitions.is_empty(), "batches outlive their requests");
            self.nodes.remove(&node);
        }
    }

    /// When the first node with requests outstanding will have been silent for `silence`
    /// if it answers nothing until then.
    pub fn silent_at(&self, silence: Duration) -> Option<Instant> {
        self.nodes.values().map(|n| n.heard_at + silence).min()
    }

    /// Nodes with requests outstanding that have not answered anything for `silence`, each
    /// with the partitions those requests carry.
    pub fn silent(&self, now: Instant, silence: Duration) -> Vec<(i32, Vec<Tp>)> {
        let mut out: Vec<_> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.heard_at) >= silence)
            .map(|(node, n)| (*node, n.partitions.keys().cloned().collect()))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".to_string(), p)
    }

    #[test]
    fn counts_requests_and_partitions_per_node() {
        let t0 = Instant::now();
        let mut f = InFlight::default();
        f.sent(1, [&tp(0), &tp(1)], t0);
        f.sent(1, [&tp(0)], t0);
        f.sent(2, [&tp(2)], t0);
        assert_eq!((f.at(1), f.at(2), f.at(3), f.total()), (2, 1, 0, 3));
        f.ended(1, [&tp(0), &tp(1)], t0);
        assert_eq!((f.at(1), f.total()), (1, 2));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            f.silent(later, Duration::from_secs(1)),
            vec![(1, vec![tp(0)]), (2, vec![tp(2)])]
        );
        f.ended(1, [&tp(0)], t0);
        f.ended(2, [&tp(2)], t0);
        assert_eq!(f.total(), 0);
        assert!(f.silent(later, Duration::ZERO).is_empty());
    }

    #[test]
    fn an_answer_restarts_the_silence() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut f = InFlight::default();
        f.sent(1, [&tp(0)], t0);
        f.sent(1, [&tp(1)], t0);
        assert_eq!(f.silent(t0 + second, second).len(), 1);
        f.ended(1, [&tp(0)], t0 + second);
        assert!(f.silent(t0 + second, second).is_empty());
        assert_eq!(f.silent(t0 + 2 * second, second), vec![(1, vec![tp(1)])]);
        assert_eq!(f.silent_at(second), Some(t0 + 2 * second));
    }
}
