//! What a partition's leader knows of its followers: each one's log end offset (LEO) as its
//! fetches report it, and since when it has been caught up. From that the leader computes
//! the high watermark (the smallest LEO in the ISR) and which followers should leave
//! (not caught up for `replica.lag.time.max.ms`) or join (reached the HW) the ISR.
//!
//! Pure: time is passed in, nothing is locked or sent; the partition holds one tracker per
//! leadership (a new one whenever this broker becomes leader).
//!
//! "Caught up" follows Kafka's rule: a fetch at or past the leader's LEO makes the follower
//! caught up now; a fetch at or past the LEO the leader had at the follower's previous fetch
//! makes it caught up as of that previous fetch. So a follower that keeps fetching but never
//! reaches the end of a log that keeps growing falls behind by exactly the time it lags.

use std::collections::{BTreeMap, BTreeSet};

/// One follower as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Follower {
    /// The offset of its last fetch (its LEO), -1 until it fetched in this leadership.
    leo: i64,
    /// When it was last caught up to the leader's LEO.
    last_caught_up_ms: i64,
    /// When it last fetched, and the leader's LEO then.
    last_fetch_ms: i64,
    leader_leo_at_last_fetch: i64,
}

impl Follower {
    /// A follower that has not fetched yet, given the full lag time from `now_ms`.
    fn fresh(now_ms: i64) -> Follower {
        Follower {
            leo: -1,
            last_caught_up_ms: now_ms,
            last_fetch_ms: now_ms,
            leader_leo_at_last_fetch: i64::MAX,
        }
    }
}

/// The followers of one partition, seen by its leader.
#[derive(Debug, Clone, Default)]
pub struct ReplicaTracker {
    followers: BTreeMap<i32, Follower>,
}

impl ReplicaTracker {
    /// A tracker for a new leadership of broker `leader` over `replicas`. The followers in
    /// the ISR count as caught up now: they get the full lag time to prove it.
    pub fn new(leader: i32, replicas: &[i32], now_ms: i64) -> ReplicaTracker {
        let followers = replicas
            .iter()
            .filter(|&&r| r != leader)
            .map(|&r| (r, Follower::fresh(now_ms)))
            .collect();
        ReplicaTracker { followers }
    }

    /// The replicas changed under the same leadership (a reassignment): new followers are
    /// tracked from now (not caught up: they have not fetched), removed ones forgotten, the
    /// others keep what the leader knows of them.
    pub fn set_replicas(&mut self, leader: i32, replicas: &[i32], now_ms: i64) {
        self.followers.retain(|r, _| replicas.contains(r));
        for &r in replicas.iter().filter(|&&r| r != leader) {
            self.followers
                .entry(r)
                .or_insert_with(|| Follower::fresh(now_ms));
        }
    }

    /// Whether `replica` is one of the followers.
    pub fn is_follower(&self, replica: i32) -> bool {
        self.followers.contains_key(&replica)
    }

    /// The follower's LEO as last reported, -1 if it has not fetched yet.
    pub fn follower_leo(&self, replica: i32) -> i64 {
        self.followers.get(&replica).map_or(-1, |f| f.leo)
    }

    /// Records a fetch by `replica` at `fetch_offset` (its LEO) while the leader's LEO is
    /// `leader_leo`. Returns false for a broker that is not a follower.
    pub fn on_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_leo: i64,
        now_ms: i64,
    ) -> bool {
        let Some(f) = self.followers.get_mut(&replica) else {
            return false;
        };
        if fetch_offset >= leader_leo {
            f.last_caught_up_ms = now_ms;
        } else if fetch_offset >= f.leader_leo_at_last_fetch {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.leo = fetch_offset;
        f.last_fetch_ms = now_ms;
        f.leader_leo_at_last_fetch = leader_leo;
        true
    }

    /// The high watermark these LEOs allow: the smallest LEO among the leader (`leader_leo`)
    /// and the followers in `isr` (an id may come twice). A follower in the ISR that has not
    /// fetched yet holds it at -1 (the caller keeps the HW it has: it never moves back).
    pub fn high_watermark<'a>(
        &self,
        leader_leo: i64,
        isr: impl IntoIterator<Item = &'a i32>,
    ) -> i64 {
        isr.into_iter()
            .filter_map(|r| self.followers.get(r))
            .map(|f| f.leo)
            .fold(leader_leo, i64::min)
    }

    /// The followers in `isr` not caught up for longer than `max_lag_ms`.
    pub fn lagging(&self, isr: &BTreeSet<i32>, now_ms: i64, max_lag_ms: i64) -> Vec<i32> {
        isr.iter()
            .filter(|r| {
                self.followers
                    .get(r)
                    .is_some_and(|f| now_ms - f.last_caught_up_ms > max_lag_ms)
            })
            .copied()
            .collect()
    }

    /// Whether follower `replica` may join the ISR: its LEO reached the HW and the start of
    /// the leader's current epoch (so it holds everything this leader committed).
    pub fn may_join(&self, replica: i32, high_watermark: i64, epoch_start_offset: i64) -> bool {
        self.followers
            .get(&replica)
            .is_some_and(|f| f.leo >= 0 && f.leo >= high_watermark && f.leo >= epoch_start_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_added_under_a_leadership_are_tracked_and_removed_ones_forgotten() {
        let mut t = ReplicaTracker::new(1, &[1, 2], 0);
        assert!(t.on_fetch(2, 10, 10, 5));
        assert!(!t.on_fetch(3, 0, 10, 5), "not a replica yet");
        t.set_replicas(1, &[1, 2, 3], 6);
        assert_eq!(t.follower_leo(2), 10, "what the leader knew is kept");
        assert!(t.is_follower(3));
        assert_eq!(t.follower_leo(3), -1);
        assert!(t.on_fetch(3, 4, 10, 7));
        assert!(!t.may_join(3, 10, 0), "behind the HW");
        t.set_replicas(1, &[1, 3], 8);
        assert!(!t.is_follower(2));
    }

    fn isr(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn the_high_watermark_is_the_smallest_leo_in_the_isr() {
        let mut t = ReplicaTracker::new(1, &[1, 2, 3], 0);
        assert_eq!(
            t.high_watermark(10, &isr(&[1, 2, 3])),
            -1,
            "nobody fetched yet"
        );
        assert!(t.on_fetch(2, 10, 10, 5));
        assert!(t.on_fetch(3, 7, 10, 5));
        assert_eq!(t.high_watermark(10, &isr(&[1, 2, 3])), 7);
        assert_eq!(t.high_watermark(10, &isr(&[1, 2])), 10, "3 left the ISR");
        assert_eq!(t.high_watermark(10, &isr(&[1])), 10, "the leader alone");
        assert!(!t.on_fetch(4, 10, 10, 5), "not a replica");
    }

    #[test]
    fn a_follower_that_never_reaches_the_end_falls_behind_by_its_lag() {
        let mut t = ReplicaTracker::new(1, &[1, 2], 0);
        let all = isr(&[1, 2]);
        // Fetches at the end: caught up each time.
        t.on_fetch(2, 100, 100, 1_000);
        assert!(t.lagging(&all, 30_999, 30_000).is_empty());
        // The leader grows; the follower reaches the previous end each time: caught up as
        // of its previous fetch.
        t.on_fetch(2, 100, 150, 2_000);
        t.on_fetch(2, 150, 200, 3_000);
        assert!(t.lagging(&all, 32_000, 30_000).is_empty());
        assert_eq!(t.lagging(&all, 32_001, 30_000), vec![2]);
        // A follower that stops fetching lags from its last catch-up.
        let t = ReplicaTracker::new(1, &[1, 2], 0);
        assert!(
            t.lagging(&all, 30_000, 30_000).is_empty(),
            "a new leader gives it time"
        );
        assert_eq!(t.lagging(&all, 30_001, 30_000), vec![2]);
    }

    #[test]
    fn a_follower_joins_once_it_reached_the_hw_and_the_epoch_start() {
        let mut t = ReplicaTracker::new(1, &[1, 2, 3], 0);
        assert!(!t.may_join(2, 0, 0), "not fetched yet");
        t.on_fetch(2, 40, 100, 1);
        assert!(!t.may_join(2, 50, 0));
        t.on_fetch(2, 60, 100, 2);
        assert!(t.may_join(2, 50, 0));
        assert!(
            !t.may_join(2, 50, 80),
            "has not reached this leader's epoch"
        );
        assert!(!t.may_join(9, 0, 0));
    }
}
