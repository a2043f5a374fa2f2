//! Where the replicas of new partitions go: on distinct live brokers, leaders spread
//! round-robin from a start that varies per topic, followers shifted so that no two brokers
//! always follow each other, and replicas of one partition on as many different racks
//! (`broker.rack`) as there are. A broker without a rack counts as a rack of its own kind
//! (as Kafka's KRaft placer does), so a cluster without racks gets plain round-robin.
//!
//! Pure: the caller passes the brokers and a seed (the controller uses the new topic's random
//! id), so placements are reproducible in tests.

use std::collections::BTreeSet;

/// A broker replicas may be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeable<'a> {
    pub id: i32,
    pub rack: Option<&'a str>,
}

/// The replica lists of partitions `first ..first + count` of a topic, `rf` replicas each,
/// the first of each list its leader. `brokers` must hold at least `rf` distinct brokers.
pub fn assign_replicas(
    brokers: &[Placeable<'_>],
    first: i32,
    count: i32,
    rf: usize,
    seed: u64,
) -> Vec<Vec<i32>> {
    let order = interleave_racks(brokers);
    let n = order.len();
    assert!(
        rf >= 1 && rf <= n,
        "replication factor checked by the caller"
    );
    let racks: BTreeSet<Option<&str>> = order.iter().map(|b| b.rack).collect();
    let start = (seed % n as u64) as usize;
    let shift_base = ((seed / n as u64) % (n.max(2) as u64 - 1)) as usize;
    (first..first + count)
        .map(|p| {
            let p = p as usize;
            let lead = (start + p) % n;
            // Every other broker once, in an order shifted each time the leaders wrap.
            let shift = if n > 1 {
                (shift_base + p / n) % (n - 1)
            } else {
                0
            };
            let followers =
                (0..n.saturating_sub(1)).map(|j| (lead + 1 + (shift + j) % (n - 1)) % n);
            let mut chosen = vec![order[lead]];
            let mut racks_used: BTreeSet<Option<&str>> = BTreeSet::from([order[lead].rack]);
            while chosen.len() < rf {
                let before = chosen.len();
                for i in followers.clone() {
                    if chosen.len() == rf {
                        break;
                    }
                    let b = order[i];
                    let rack_taken = racks_used.len() < racks.len() && racks_used.contains(&b.rack);
                    if chosen.iter().any(|c| c.id == b.id) || rack_taken {
                        continue;
                    }
                    chosen.push(b);
                    racks_used.insert(b.rack);
                    if racks_used.len() == racks.len() {
                        racks_used.clear();
                    }
                }
                assert!(
                    chosen.len() > before,
                    "a pass over distinct brokers always adds one"
                );
            }
            let replicas: Vec<i32> = chosen.iter().map(|b| b.id).collect();
            debug_assert_eq!(
                replicas.iter().collect::<BTreeSet<_>>().len(),
                replicas.len(),
                "replicas are distinct"
            );
            replicas
        })
        .collect()
}

/// The brokers by id, reordered so that consecutive brokers are on different racks where
/// possible: the first of every rack, then the second of every rack, and so on.
fn interleave_racks<'a, 'b>(brokers: &'b [Placeable<'a>]) -> Vec<&'b Placeable<'a>> {
    let racks: BTreeSet<Option<&str>> = brokers.iter().map(|b| b.rack).collect();
    let mut per_rack: Vec<Vec<&Placeable<'a>>> = racks
        .iter()
        .map(|r| {
            let mut of_rack: Vec<&Placeable<'a>> =
                brokers.iter().filter(|b| b.rack == *r).collect();
            of_rack.sort_by_key(|b| b.id);
            of_rack
        })
        .collect();
    let mut order = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while order.len() < brokers.len() {
        for of_rack in &mut per_rack {
            if let Some(b) = of_rack.get(round) {
                order.push(*b);
            }
        }
        round += 1;
    }
    order
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn brokers<'a>(racks: &[(i32, Option<&'a str>)]) -> Vec<Placeable<'a>> {
        racks
            .iter()
            .map(|(id, rack)| Placeable {
                id: *id,
                rack: *rack,
            })
            .collect()
    }

    #[test]
    fn replicas_are_distinct_and_leaders_balanced() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        for seed in 0..20 {
            let plan = assign_replicas(&b, 0, 30, 3, seed);
            let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
            for replicas in &plan {
                assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
                *leaders.entry(replicas[0]).or_default() += 1;
            }
            assert_eq!(
                leaders.values().copied().collect::<Vec<_>>(),
                vec![10, 10, 10]
            );
        }
    }

    #[test]
    fn the_start_varies_with_the_seed() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let firsts: BTreeSet<i32> = (0..3)
            .map(|seed| assign_replicas(&b, 0, 1, 1, seed)[0][0])
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn followers_shift_so_pairs_vary() {
        let b = brokers(&[(1, None), (2, None), (3, None), (4, None)]);
        let plan = assign_replicas(&b, 0, 12, 2, 0);
        let pairs: BTreeSet<(i32, i32)> = plan.iter().map(|r| (r[0], r[1])).collect();
        assert!(
            pairs.len() > 4,
            "each leader has more than one follower: {plan:?}"
        );
    }

    #[test]
    fn replicas_of_a_partition_sit_on_different_racks() {
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let rack = |id: i32| b.iter().find(|x| x.id == id).unwrap().rack;
        for seed in 0..10 {
            for replicas in assign_replicas(&b, 0, 24, 3, seed) {
                let racks: BTreeSet<_> = replicas.iter().map(|id| rack(*id)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
            // More replicas than racks: still distinct brokers, every rack used.
            for replicas in assign_replicas(&b, 0, 6, 5, seed) {
                assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 5);
                let racks: BTreeSet<_> = replicas.iter().map(|id| rack(*id)).collect();
                assert_eq!(racks.len(), 3);
            }
        }
    }

    #[test]
    fn later_partitions_continue_the_pattern() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let all = assign_replicas(&b, 0, 6, 2, 7);
        let tail = assign_replicas(&b, 3, 3, 2, 7);
        assert_eq!(&all[3..], &tail[..]);
    }
}
