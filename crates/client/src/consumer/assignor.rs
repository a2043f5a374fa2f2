//! Partition assignors, run by the group leader: range, round-robin and cooperative-sticky
//! (`partition.assignment.strategy`).

use std::collections::{BTreeSet, HashMap};

use super::TopicPartition;

/// One member's subscription as the leader reads it from JoinGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MemberSubscription {
    pub member_id: String,
    pub topics: Vec<String>,
    /// Partitions the member owned in the generation it reports (cooperative protocol).
    pub owned: Vec<TopicPartition>,
    pub generation: i32,
}

impl MemberSubscription {
    fn wants(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }
}

/// Each member's partitions, in member-id order.
pub(crate) type Plan = Vec<(String, Vec<TopicPartition>)>;

/// A partition assignment strategy, named as in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl Assignor {
    /// The protocol name sent in JoinGroup (shared with the Java client and librdkafka).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Parses a Kafka name or the Java client's class name.
    pub fn from_name(name: &str) -> Option<Assignor> {
        let short = name.strip_prefix("org.apache.kafka.clients.consumer.");
        match (name, short) {
            ("range", _) | (_, Some("RangeAssignor")) => Some(Assignor::Range),
            ("roundrobin", _) | (_, Some("RoundRobinAssignor")) => Some(Assignor::RoundRobin),
            ("cooperative-sticky", _) | (_, Some("CooperativeStickyAssignor")) => {
                Some(Assignor::CooperativeSticky)
            }
            _ => None,
        }
    }

    /// Whether the assignor supports incremental (KIP-429) rebalancing.
    pub fn is_cooperative(self) -> bool {
        self == Assignor::CooperativeSticky
    }

    /// Assigns the partitions of the members' topics (`partition_counts` lists the topics
    /// that exist) to the members.
    pub(crate) fn assign(
        self,
        members: &[MemberSubscription],
        partition_counts: &HashMap<String, i32>,
    ) -> Plan {
        let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
        sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
        sorted.dedup_by(|a, b| a.member_id == b.member_id);
        let mut topics: Vec<&String> = partition_counts.keys().collect();
        topics.sort();
        let plan = match self {
            Assignor::Range => range(&sorted, &topics, partition_counts),
            Assignor::RoundRobin => round_robin(&sorted, &topics, partition_counts),
            Assignor::CooperativeSticky => cooperative_sticky(&sorted, &topics, partition_counts),
        };
        sorted
            .iter()
            .zip(plan)
            .map(|(m, mut tps)| {
                tps.sort();
                (m.member_id.clone(), tps)
            })
            .collect()
    }
}

/// For each topic, its subscribers (by member id) get consecutive ranges, the first
/// `partitions % subscribers` one partition more.
fn range(
    members: &[&MemberSubscription],
    topics: &[&String],
    counts: &HashMap<String, i32>,
) -> Vec<Vec<TopicPartition>> {
    let mut plan = vec![Vec::new(); members.len()];
    for topic in topics {
        let subscribed: Vec<usize> = (0..members.len())
            .filter(|i| members[*i].wants(topic))
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        let (count, n) = (counts[*topic], subscribed.len() as i32);
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (k, i) in subscribed.into_iter().enumerate() {
            let len = per + i32::from((k as i32) < extra);
            plan[i].extend((next..next + len).map(|p| ((*topic).clone(), p)));
            next += len;
        }
    }
    plan
}

/// All partitions in (topic, partition) order dealt to the members in turn, skipping
/// members not subscribed to the partition's topic.
fn round_robin(
    members: &[&MemberSubscription],
    topics: &[&String],
    counts: &HashMap<String, i32>,
) -> Vec<Vec<TopicPartition>> {
    let mut plan = vec![Vec::new(); members.len()];
    let mut next = 0;
    for topic in topics {
        for p in 0..counts[*topic] {
            let Some(i) = (0..members.len())
                .map(|k| (next + k) % members.len())
                .find(|i| members[*i].wants(topic))
            else {
                break;
            };
            plan[i].push(((*topic).clone(), p));
            next = i + 1;
        }
    }
    plan
}

/// Keeps every partition with its current owner where possible, hands out unowned ones to
/// the least-loaded subscriber and moves partitions only to even out the load. A partition
/// that moves is left unassigned in this generation: its owner first revokes it, rejoins,
/// and the follow-up rebalance gives it to the new member (KIP-429).
fn cooperative_sticky(
    members: &[&MemberSubscription],
    topics: &[&String],
    counts: &HashMap<String, i32>,
) -> Vec<Vec<TopicPartition>> {
    let exists = |(t, p): &TopicPartition| counts.get(t).is_some_and(|n| (0..*n).contains(p));
    // Valid ownership claims; on a conflict the member reporting the newer generation wins.
    let mut by_generation: Vec<usize> = (0..members.len()).collect();
    by_generation.sort_by_key(|i| -members[*i].generation);
    let mut owner: HashMap<TopicPartition, usize> = HashMap::new();
    for i in by_generation {
        for tp in &members[i].owned {
            if exists(tp) && members[i].wants(&tp.0) {
                owner.entry(tp.clone()).or_insert(i);
            }
        }
    }
    let mut plan: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); members.len()];
    for (tp, i) in &owner {
        plan[*i].insert(tp.clone());
    }
    for topic in topics {
        for p in 0..counts[*topic] {
            let tp = ((*topic).clone(), p);
            if owner.contains_key(&tp) {
                continue;
            }
            let least = (0..members.len())
                .filter(|i| members[*i].wants(topic))
                .min_by_key(|i| plan[*i].len());
            if let Some(i) = least {
                plan[i].insert(tp);
            }
        }
    }
    // Even out: move a partition from a member holding at least two more than an eligible
    // receiver. Each move lowers the sum of squared loads, so this ends.
    loop {
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|i| plan[*i].len());
        let moved = order.iter().find_map(|&to| {
            order.iter().rev().find_map(|&from| {
                if plan[from].len() < plan[to].len() + 2 {
                    return None;
                }
                let tp = plan[from]
                    .iter()
                    .rev()
                    .find(|(t, _)| members[to].wants(t))?
                    .clone();
                Some((from, to, tp))
            })
        });
        let Some((from, to, tp)) = moved else { break };
        plan[from].remove(&tp);
        plan[to].insert(tp);
    }
    plan.into_iter()
        .enumerate()
        .map(|(i, tps)| {
            tps.into_iter()
                .filter(|tp| owner.get(tp).is_none_or(|o| *o == i))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, i32)]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            generation: 1,
        }
    }

    fn counts(list: &[(&str, i32)]) -> HashMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn get(plan: &Plan, m: &str) -> Vec<TopicPartition> {
        plan.iter().find(|(id, _)| id == m).unwrap().1.clone()
    }

    fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn names_include_java_classes() {
        for (name, a) in [
            ("range", Assignor::Range),
            (
                "org.apache.kafka.clients.consumer.RangeAssignor",
                Assignor::Range,
            ),
            ("roundrobin", Assignor::RoundRobin),
            (
                "org.apache.kafka.clients.consumer.RoundRobinAssignor",
                Assignor::RoundRobin,
            ),
            ("cooperative-sticky", Assignor::CooperativeSticky),
            (
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
                Assignor::CooperativeSticky,
            ),
        ] {
            assert_eq!(Assignor::from_name(name), Some(a), "{name}");
        }
        assert_eq!(Assignor::from_name("sticky"), None);
    }

    #[test]
    fn range_splits_consecutive_ranges() {
        let members = [
            member("b", &["t1", "t2"], &[]),
            member("a", &["t1", "t2"], &[]),
            member("c", &["t1"], &[]),
        ];
        let plan = Assignor::Range.assign(&members, &counts(&[("t1", 7), ("t2", 3)]));
        assert_eq!(
            get(&plan, "a"),
            tps(&[("t1", 0), ("t1", 1), ("t1", 2), ("t2", 0), ("t2", 1)])
        );
        assert_eq!(get(&plan, "b"), tps(&[("t1", 3), ("t1", 4), ("t2", 2)]));
        assert_eq!(get(&plan, "c"), tps(&[("t1", 5), ("t1", 6)]));
    }

    #[test]
    fn round_robin_deals_in_turn() {
        let members = [
            member("a", &["t1", "t2"], &[]),
            member("b", &["t1", "t2"], &[]),
        ];
        let plan = Assignor::RoundRobin.assign(&members, &counts(&[("t1", 3), ("t2", 3)]));
        assert_eq!(get(&plan, "a"), tps(&[("t1", 0), ("t1", 2), ("t2", 1)]));
        assert_eq!(get(&plan, "b"), tps(&[("t1", 1), ("t2", 0), ("t2", 2)]));
        // Range would give a both t1-0 and t1-1.
        let range = Assignor::Range.assign(&members, &counts(&[("t1", 3), ("t2", 3)]));
        assert_ne!(get(&range, "a"), get(&plan, "a"));
    }

    #[test]
    fn cooperative_sticky_keeps_owners_and_withholds_moved_partitions() {
        let all: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
        // a owned everything; b joins.
        let members = [member("a", &["t"], &all), member("b", &["t"], &[])];
        let plan = Assignor::CooperativeSticky.assign(&members, &counts(&[("t", 6)]));
        let a = get(&plan, "a");
        assert_eq!(a.len(), 3, "{plan:?}");
        assert!(a.iter().all(|tp| all.contains(&(tp.0.as_str(), tp.1))));
        // The three partitions moving to b are withheld until a has revoked them.
        assert!(get(&plan, "b").is_empty(), "{plan:?}");
        // Second round: a now owns its three, the others are free and go to b.
        let owned: Vec<(&str, i32)> = a.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        let members = [member("a", &["t"], &owned), member("b", &["t"], &[])];
        let plan2 = Assignor::CooperativeSticky.assign(&members, &counts(&[("t", 6)]));
        assert_eq!(get(&plan2, "a"), a);
        assert_eq!(get(&plan2, "b").len(), 3);
    }

    #[test]
    fn cooperative_sticky_balances_fresh_members_and_respects_subscriptions() {
        let members = [
            member("a", &["t1", "t2"], &[]),
            member("b", &["t1"], &[]),
            member("c", &["t2"], &[]),
        ];
        let plan = Assignor::CooperativeSticky.assign(&members, &counts(&[("t1", 4), ("t2", 4)]));
        let total: usize = plan.iter().map(|(_, tps)| tps.len()).sum();
        assert_eq!(total, 8);
        assert!(get(&plan, "b").iter().all(|(t, _)| t == "t1"));
        assert!(get(&plan, "c").iter().all(|(t, _)| t == "t2"));
        for (_, tps) in &plan {
            assert!((2..=3).contains(&tps.len()), "{plan:?}");
        }
    }
}
