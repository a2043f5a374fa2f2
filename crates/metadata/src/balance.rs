//! Elections on demand and preferred-leader balancing: after failures leadership piles up
//! on the brokers that stayed; the controller moves it back to each partition's preferred
//! replica (the first of its assignment), on a timer (`auto.leader.rebalance.enable`) or
//! when an operator asks (Kafka's ElectLeaders, PREFERRED or UNCLEAN).
//!
//! Pure, like [`crate::election`]: the image in, per-partition outcomes and the
//! `PartitionChange` records out. A preferred election changes only the leader (a new
//! leader epoch; the ISR stays), and only to a preferred replica that is live and in the
//! ISR, so it never loses a committed record. An unclean election is for a partition
//! without a leader: an in-sync or eligible replica when one is live, else any live replica.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::election::{self, ElectionDefaults};
use crate::image::{MetadataImage, PartitionImage, TopicImage};
use crate::record::MetadataRecord;

/// Which election an operator asks for (Kafka's `ElectionType`: 0 preferred, 1 unclean).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionKind {
    Preferred,
    Unclean,
}

/// What an election did for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionOutcome {
    /// This replica leads now.
    Elected(i32),
    /// Nothing to do: the preferred replica leads (preferred), or a live one does (unclean).
    NotNeeded,
    /// The preferred replica is not live or not in the ISR.
    PreferredNotAvailable(String),
    /// No live replica could lead (unclean).
    EligibleNotAvailable(String),
    /// The topic or the partition does not exist.
    UnknownPartition,
}

/// One partition's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: i32,
    pub outcome: ElectionOutcome,
}

/// The partition changes and per-partition outcomes of an election of `kind` for
/// `partitions` (topic and partition ids; `None`: every partition, where only partitions
/// that needed an election are reported, as Kafka does).
pub fn elect(
    image: &MetadataImage,
    defaults: &ElectionDefaults,
    kind: ElectionKind,
    partitions: Option<&[(String, Vec<i32>)]>,
) -> (Vec<ElectionResult>, Vec<MetadataRecord>) {
    let mut results = Vec::new();
    let mut records = Vec::new();
    let mut one = |topic: &TopicImage, p: &PartitionImage| {
        let (outcome, record) = match kind {
            ElectionKind::Preferred => preferred(image, topic, p),
            ElectionKind::Unclean => unclean(image, defaults, topic, p),
        };
        records.extend(record);
        ElectionResult {
            topic: topic.name.clone(),
            partition: p.partition,
            outcome,
        }
    };
    match partitions {
        None => {
            for topic in image.topics.values() {
                for p in topic.partitions.values() {
                    let r = one(topic, p);
                    if r.outcome != ElectionOutcome::NotNeeded {
                        results.push(r);
                    }
                }
            }
        }
        Some(wanted) => {
            let mut seen = BTreeSet::new();
            for (name, ids) in wanted {
                for &id in ids {
                    if !seen.insert((name, id)) {
                        continue; // asked twice: answered once
                    }
                    let found = image
                        .topic(name)
                        .and_then(|t| t.partitions.get(&id).map(|p| (t, p)));
                    results.push(match found {
                        Some((topic, p)) => one(topic, p),
                        None => ElectionResult {
                            topic: name.clone(),
                            partition: id,
                            outcome: ElectionOutcome::UnknownPartition,
                        },
                    });
                }
            }
        }
    }
    (results, records)
}

/// The preferred replica of `p` to lead, if it can.
fn preferred(
    image: &MetadataImage,
    topic: &TopicImage,
    p: &PartitionImage,
) -> (ElectionOutcome, Option<MetadataRecord>) {
    let first = p.replicas[0];
    if p.leader == first {
        return (ElectionOutcome::NotNeeded, None);
    }
    if !image.is_live(first) {
        let why = format!("preferred replica {first} is not live");
        return (ElectionOutcome::PreferredNotAvailable(why), None);
    }
    if !p.isr.contains(&first) {
        let why = format!("preferred replica {first} is not in the ISR {:?}", p.isr);
        return (ElectionOutcome::PreferredNotAvailable(why), None);
    }
    let record = MetadataRecord::PartitionChange {
        topic_id: topic.topic_id,
        partition: p.partition,
        leader: Some(first),
        isr: None,
        replicas: None,
        elr: None,
        adding_replicas: None,
        removing_replicas: None,
    };
    (ElectionOutcome::Elected(first), Some(record))
}

/// A leader for a partition that has none, unclean if it must be.
fn unclean(
    image: &MetadataImage,
    defaults: &ElectionDefaults,
    topic: &TopicImage,
    p: &PartitionImage,
) -> (ElectionOutcome, Option<MetadataRecord>) {
    let live = |id: i32| image.is_live(id);
    if p.leader != -1 && live(p.leader) {
        return (ElectionOutcome::NotNeeded, None);
    }
    let policy = election::TopicPolicy {
        unclean_leader_election: true,
        ..defaults.for_topic(image, &topic.name)
    };
    let next = election::settle(&topic.name, p, p.isr.clone(), &policy, &live);
    if next.leader == -1 {
        let why = format!("no replica of {:?} is live", p.replicas);
        return (ElectionOutcome::EligibleNotAvailable(why), None);
    }
    let leader = next.leader;
    let record = election::change_record(topic.topic_id, p, next);
    (ElectionOutcome::Elected(leader), record)
}

/// The partitions to give back to their preferred replica: on each live broker whose share
/// of the partitions it prefers but does not lead exceeds `max_imbalance_percent`, those
/// whose preferred replica is in the ISR (Kafka's `leader.imbalance.per.broker.percentage`).
pub fn imbalanced(image: &MetadataImage, max_imbalance_percent: u32) -> Vec<(String, Vec<i32>)> {
    let over: BTreeSet<i32> = imbalance_by_broker(image)
        .into_iter()
        // Integer form of `led_elsewhere / preferring * 100 > max`.
        .filter(|&(broker, (preferring, led_elsewhere))| {
            image.is_live(broker)
                && led_elsewhere * 100 > preferring * max_imbalance_percent as usize
        })
        .map(|(broker, _)| broker)
        .collect();
    image
        .topics
        .values()
        .filter_map(|topic| {
            let partitions: Vec<i32> = topic
                .partitions
                .values()
                .filter(|p| {
                    let first = p.replicas[0];
                    over.contains(&first) && p.leader != first && p.isr.contains(&first)
                })
                .map(|p| p.partition)
                .collect();
            (!partitions.is_empty()).then(|| (topic.name.clone(), partitions))
        })
        .collect()
}

/// Per broker: how many partitions prefer it, and how many of those another replica leads.
pub fn imbalance_by_broker(image: &MetadataImage) -> BTreeMap<i32, (usize, usize)> {
    let mut by = BTreeMap::new();
    for p in image.topics.values().flat_map(|t| t.partitions.values()) {
        let e: &mut (usize, usize) = by.entry(p.replicas[0]).or_default();
        e.0 += 1;
        if p.leader != p.replicas[0] {
            e.1 += 1;
        }
    }
    by
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::test_images::{apply, register};

    /// Brokers 1-3 live; topic t with `n` partitions, partition i preferring broker
    /// 1 + i % 3 (replicas rotated), all led by their preferred replica.
    fn cluster(n: i32) -> (MetadataImage, Uuid) {
        let id = Uuid::new_v4();
        let mut records: Vec<_> = (1..=3).map(register).collect();
        records.push(MetadataRecord::Topic {
            name: "t".into(),
            topic_id: id,
        });
        for i in 0..n {
            let first = 1 + i % 3;
            let replicas = (0..3).map(|k| 1 + (first - 1 + k) % 3).collect();
            records.push(MetadataRecord::new_partition(id, i, replicas));
        }
        (apply(&MetadataImage::default(), records), id)
    }

    fn lead(image: &MetadataImage, id: Uuid, partition: i32, leader: i32) -> MetadataImage {
        apply(
            image,
            vec![MetadataRecord::PartitionChange {
                topic_id: id,
                partition,
                leader: Some(leader),
                isr: None,
                replicas: None,
                elr: None,
                adding_replicas: None,
                removing_replicas: None,
            }],
        )
    }

    fn leader(image: &MetadataImage, partition: i32) -> (i32, i32) {
        let p = &image.topic("t").unwrap().partitions[&partition];
        (p.leader, p.leader_epoch)
    }

    fn all(partitions: &[i32]) -> Vec<(String, Vec<i32>)> {
        vec![("t".to_string(), partitions.to_vec())]
    }

    #[test]
    fn a_preferred_election_moves_only_the_leader_back() {
        let (image, id) = cluster(3);
        let image = lead(&image, id, 0, 2); // partition 0 prefers 1
        let d = ElectionDefaults::default();
        let (results, records) = elect(&image, &d, ElectionKind::Preferred, Some(&all(&[0, 1, 7])));
        let outcomes: Vec<_> = results.iter().map(|r| r.outcome.clone()).collect();
        assert_eq!(
            outcomes,
            vec![
                ElectionOutcome::Elected(1),
                ElectionOutcome::NotNeeded,
                ElectionOutcome::UnknownPartition
            ]
        );
        let after = apply(&image, records);
        assert_eq!(leader(&after, 0), (1, 2), "a new leader epoch");
        assert_eq!(after.topic("t").unwrap().partitions[&0].isr, vec![1, 2, 3]);
        // All partitions: only those that needed one are reported.
        let (results, records) = elect(&after, &d, ElectionKind::Preferred, None);
        assert!(results.is_empty() && records.is_empty(), "{results:?}");
    }

    #[test]
    fn a_preferred_replica_out_of_the_isr_or_fenced_cannot_lead() {
        let (image, id) = cluster(3);
        let image = lead(&image, id, 0, 2);
        let image = apply(
            &image,
            vec![MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: None,
                isr: Some(vec![2, 3]),
                replicas: None,
                elr: None,
                adding_replicas: None,
                removing_replicas: None,
            }],
        );
        let d = ElectionDefaults::default();
        let (results, records) = elect(&image, &d, ElectionKind::Preferred, Some(&all(&[0])));
        assert!(records.is_empty());
        assert!(
            matches!(&results[0].outcome, ElectionOutcome::PreferredNotAvailable(m) if m.contains("ISR")),
            "{results:?}"
        );
        let epoch = image.brokers[&3].epoch;
        let image = lead(&image, id, 2, 1); // partition 2 prefers 3
        let fenced = apply(
            &image,
            vec![MetadataRecord::FenceBroker {
                node_id: 3,
                broker_epoch: epoch,
            }],
        );
        let (results, _) = elect(&fenced, &d, ElectionKind::Preferred, Some(&all(&[2])));
        assert!(
            matches!(&results[0].outcome, ElectionOutcome::PreferredNotAvailable(m) if m.contains("not live")),
            "{results:?}"
        );
    }

    #[test]
    fn an_unclean_election_gives_a_leaderless_partition_any_live_replica() {
        let (image, id) = cluster(1);
        // Offline: leader -1, only broker 1 (fenced) in the ISR.
        let epoch = image.brokers[&1].epoch;
        let image = apply(
            &image,
            vec![
                MetadataRecord::PartitionChange {
                    topic_id: id,
                    partition: 0,
                    leader: Some(-1),
                    isr: Some(vec![1]),
                    replicas: None,
                    elr: Some(vec![]),
                    adding_replicas: None,
                    removing_replicas: None,
                },
                MetadataRecord::FenceBroker {
                    node_id: 1,
                    broker_epoch: epoch,
                },
            ],
        );
        let d = ElectionDefaults::default();
        let (results, records) = elect(&image, &d, ElectionKind::Unclean, Some(&all(&[0])));
        assert_eq!(results[0].outcome, ElectionOutcome::Elected(2));
        let after = apply(&image, records);
        assert_eq!(leader(&after, 0).0, 2);
        assert_eq!(after.topic("t").unwrap().partitions[&0].isr, vec![2]);
        let (results, records) = elect(&after, &d, ElectionKind::Unclean, Some(&all(&[0])));
        assert_eq!(results[0].outcome, ElectionOutcome::NotNeeded);
        assert!(records.is_empty());
    }

    #[test]
    fn only_a_broker_past_the_imbalance_threshold_gets_its_leadership_back() {
        // 30 partitions, 10 preferring each broker.
        let (mut image, id) = cluster(30);
        // Broker 1 prefers partitions 0, 3, ..., 27: one led elsewhere is 10 %, not over.
        image = lead(&image, id, 0, 2);
        assert!(imbalanced(&image, 10).is_empty());
        // Two is 20 %: both go back.
        image = lead(&image, id, 3, 3);
        assert_eq!(imbalanced(&image, 10), all(&[0, 3]));
        assert!(imbalanced(&image, 20).is_empty());
        assert_eq!(imbalance_by_broker(&image)[&1], (10, 2));
        // Not while broker 1 is fenced.
        let epoch = image.brokers[&1].epoch;
        let fenced = apply(
            &image,
            vec![MetadataRecord::FenceBroker {
                node_id: 1,
                broker_epoch: epoch,
            }],
        );
        assert!(imbalanced(&fenced, 10).is_empty());
        // Percentage 0: any partition led elsewhere.
        let (image, id) = cluster(3);
        let image = lead(&image, id, 0, 2);
        assert_eq!(imbalanced(&image, 0), all(&[0]));
    }
}
