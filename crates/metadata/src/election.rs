//! Leader election when a broker's liveness changes, as KRaft's controller does it: the
//! records that take a fenced broker out of every ISR and give each partition it led a new
//! leader, and those that let a returning broker lead the partitions left without one.
//!
//! Pure: the image in, `PartitionChange` records out; the controller writes them in the same
//! batch as the fence or unfence itself. A new leader is the first replica in assignment
//! order that is in the ISR and live, so leadership stays predictable (the preferred replica
//! first); a partition whose ISR has no other live member keeps its last member in the ISR
//! and goes leaderless (-1) rather than electing a replica that may lack committed records
//! (unclean election is not done here).

use crate::image::MetadataImage;
use crate::record::MetadataRecord;

/// The partition changes for fencing `broker`: out of every ISR it is in (unless it is the
/// last member), and a new leader (or none) for each partition it led.
pub fn when_fenced(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    let eligible = |id: i32| id != broker && image.is_live(id);
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for p in topic.partitions.values() {
            if !p.isr.contains(&broker) && p.leader != broker {
                continue;
            }
            let isr: Vec<i32> = if p.isr.len() > 1 {
                p.isr.iter().copied().filter(|&r| r != broker).collect()
            } else {
                p.isr.clone()
            };
            let leader = (p.leader == broker).then(|| {
                p.replicas
                    .iter()
                    .copied()
                    .find(|&r| isr.contains(&r) && eligible(r))
                    .unwrap_or(-1)
            });
            let isr = (isr != p.isr).then_some(isr);
            if leader.is_none() && isr.is_none() {
                continue;
            }
            if leader == Some(-1) {
                tracing::warn!(topic = %topic.name, partition = p.partition, broker, "no live in-sync replica can take over: the partition is offline");
            }
            records.push(MetadataRecord::PartitionChange {
                topic_id: topic.topic_id,
                partition: p.partition,
                leader,
                isr,
                replicas: None,
            });
        }
    }
    records
}

/// The partition changes for unfencing `broker`: it leads every partition that has no
/// leader and whose ISR names it.
pub fn when_unfenced(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    image
        .topics
        .values()
        .flat_map(|topic| {
            topic
                .partitions
                .values()
                .filter(|p| p.leader == -1 && p.isr.contains(&broker))
                .map(|p| MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: p.partition,
                    leader: Some(broker),
                    isr: None,
                    replicas: None,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::record::MetadataBatch;

    fn apply(image: &MetadataImage, records: Vec<MetadataRecord>) -> MetadataImage {
        let batch = MetadataBatch {
            base_offset: image.next_offset(),
            epoch: 1,
            records,
        };
        image.apply_batch(&batch).unwrap().0
    }

    /// Brokers 1-3 live; topic t with partitions 0 (replicas 1,2,3) and 1 (replicas 2,1).
    fn cluster() -> (MetadataImage, Uuid) {
        let id = Uuid::new_v4();
        let mut records = Vec::new();
        for b in 1..=3 {
            records.push(MetadataRecord::RegisterBroker {
                node_id: b,
                host: "127.0.0.1".into(),
                port: 9000 + b as u16,
                rack: None,
                incarnation_id: Uuid::new_v4(),
                broker_epoch: None,
                fenced: false,
            });
        }
        records.push(MetadataRecord::Topic {
            name: "t".into(),
            topic_id: id,
        });
        records.push(MetadataRecord::new_partition(id, 0, vec![1, 2, 3]));
        records.push(MetadataRecord::new_partition(id, 1, vec![2, 1]));
        (apply(&MetadataImage::default(), records), id)
    }

    fn fence(image: &MetadataImage, broker: i32) -> MetadataImage {
        let epoch = image.brokers[&broker].epoch;
        let mut records = when_fenced(image, broker);
        records.push(MetadataRecord::FenceBroker {
            node_id: broker,
            broker_epoch: epoch,
        });
        apply(image, records)
    }

    #[test]
    fn a_fenced_leader_hands_over_to_the_next_live_in_sync_replica() {
        let (image, id) = cluster();
        let image = fence(&image, 1);
        let p0 = &image.topic_by_id(&id).unwrap().partitions[&0];
        assert_eq!((p0.leader, p0.leader_epoch), (2, 1));
        assert_eq!(p0.isr, vec![2, 3]);
        let p1 = &image.topic_by_id(&id).unwrap().partitions[&1];
        assert_eq!(
            (p1.leader, p1.leader_epoch),
            (2, 0),
            "a follower only leaves the ISR"
        );
        assert_eq!(p1.isr, vec![2]);
        // The next leader down leaves 3, then nobody: the last member stays, offline.
        let image = fence(&image, 2);
        let p0 = &image.topic_by_id(&id).unwrap().partitions[&0];
        assert_eq!((p0.leader, p0.isr.clone()), (3, vec![3]));
        let p1 = &image.topic_by_id(&id).unwrap().partitions[&1];
        assert_eq!((p1.leader, p1.isr.clone()), (-1, vec![2]));
        let image = fence(&image, 3);
        let p0 = &image.topic_by_id(&id).unwrap().partitions[&0];
        assert_eq!((p0.leader, p0.isr.clone()), (-1, vec![3]));
        // The last in-sync replica returns and leads again; the others will join the ISR
        // when they catch up.
        let unfence = |image: &MetadataImage, broker: i32| {
            let mut records = when_unfenced(image, broker);
            records.push(MetadataRecord::UnfenceBroker {
                node_id: broker,
                broker_epoch: image.brokers[&broker].epoch,
            });
            apply(image, records)
        };
        let image = unfence(&image, 1);
        assert_eq!(
            image.topic_by_id(&id).unwrap().partitions[&0].leader,
            -1,
            "1 is not in sync"
        );
        let image = unfence(&image, 3);
        let p0 = &image.topic_by_id(&id).unwrap().partitions[&0];
        assert_eq!((p0.leader, p0.isr.clone()), (3, vec![3]));
        assert!(when_unfenced(&image, 3).is_empty());
    }
}
