//! Leader election and the eligible leader replicas, as KRaft's controller does them: the
//! records that take a fenced broker out of every ISR and give each partition it led a new
//! leader, those that let a returning broker lead the partitions left without one, and the
//! ELR bookkeeping every ISR change goes through.
//!
//! Pure: the image in, `PartitionChange` records out; the controller writes them in the same
//! batch as the fence, unfence, registration or config change itself. A new leader is, in
//! this order (each in assignment order, so the preferred replica comes first, and live):
//! 1. a member of the ISR;
//! 2. with eligible leader replicas on (KIP-966), a member of the ELR: a replica that left
//!    the ISR while it was below `min.insync.replicas`, when the high watermark cannot move,
//!    so it holds every committed record;
//! 3. with `unclean.leader.election.enable`, any replica (logged: records may be lost);
//! 4. nobody: the partition is offline (leader -1) until a replica of 1 or 2 returns.
//!
//! Without the ELR, a partition whose last ISR member goes keeps that member in its ISR (it
//! leads again when it returns). With it, the ISR may become empty and its last members wait
//! in the ELR instead; a broker that comes back from an unclean shutdown (it may have lost
//! unflushed records) leaves every ELR where another eligible replica remains.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::image::{MetadataImage, PartitionImage, TopicImage};
use crate::record::{ConfigResource, MetadataRecord};

/// The cluster-wide election settings (each controller's own config; every node of a
/// cluster should have the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionDefaults {
    /// `eligible.leader.replicas.version` >= 1: keep ELRs and the strict min-ISR rule.
    pub eligible_leader_replicas: bool,
    /// The broker default of `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// The broker default of `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
}

impl Default for ElectionDefaults {
    fn default() -> ElectionDefaults {
        ElectionDefaults {
            eligible_leader_replicas: true,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        }
    }
}

/// The settings one topic elects with: the defaults under its own overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPolicy {
    pub eligible_leader_replicas: bool,
    /// `min.insync.replicas` of the topic.
    pub min_insync_replicas: usize,
    pub unclean_leader_election: bool,
}

impl ElectionDefaults {
    /// The policy of a topic whose explicitly set configs are `overrides`.
    pub fn for_overrides(&self, overrides: &BTreeMap<String, String>) -> TopicPolicy {
        let min_isr = overrides
            .get("min.insync.replicas")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.min_insync_replicas);
        let unclean = overrides
            .get("unclean.leader.election.enable")
            .map(|v| v.eq_ignore_ascii_case("true"))
            .unwrap_or(self.unclean_leader_election);
        TopicPolicy {
            eligible_leader_replicas: self.eligible_leader_replicas,
            min_insync_replicas: min_isr,
            unclean_leader_election: unclean,
        }
    }

    /// The policy of `topic` as the image configures it.
    pub fn for_topic(&self, image: &MetadataImage, topic: &str) -> TopicPolicy {
        self.for_overrides(&image.configs_of(&ConfigResource::Topic(topic.to_string())))
    }
}

impl TopicPolicy {
    /// The ISR size below which the high watermark stops (never more than the replicas).
    pub fn effective_min_isr(&self, p: &PartitionImage) -> usize {
        self.min_insync_replicas.clamp(1, p.replicas.len().max(1))
    }
}

/// A partition's leader, ISR and ELR after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Next {
    pub(crate) leader: i32,
    pub(crate) isr: Vec<i32>,
    pub(crate) elr: Vec<i32>,
}

/// `ids` in the assignment order of `p`'s replicas.
fn in_replica_order(p: &PartitionImage, ids: impl Fn(i32) -> bool) -> Vec<i32> {
    p.replicas.iter().copied().filter(|&r| ids(r)).collect()
}

/// The ELR once `p`'s ISR becomes `isr`: the members leaving the ISR join it while the ISR
/// is below the minimum; it empties once the ISR reaches the minimum; it never holds an ISR
/// member. Always empty with the ELR off.
pub fn elr_after(p: &PartitionImage, isr: &[i32], policy: &TopicPolicy) -> Vec<i32> {
    if !policy.eligible_leader_replicas || isr.len() >= policy.effective_min_isr(p) {
        return Vec::new();
    }
    in_replica_order(p, |r| {
        !isr.contains(&r) && (p.elr.contains(&r) || p.isr.contains(&r))
    })
}

/// `p` with its ISR becoming `isr` (the ELR following), and a leader elected when the
/// current one is gone from the ISR or not `live`.
pub(crate) fn settle(
    topic: &str,
    p: &PartitionImage,
    isr: Vec<i32>,
    policy: &TopicPolicy,
    live: &dyn Fn(i32) -> bool,
) -> Next {
    let isr = if isr.is_empty() && !policy.eligible_leader_replicas {
        p.isr.clone() // the last member stays, to lead again when it returns
    } else {
        isr
    };
    let elr = elr_after(p, &isr, policy);
    if p.leader != -1 && isr.contains(&p.leader) && live(p.leader) {
        return Next {
            leader: p.leader,
            isr,
            elr,
        };
    }
    if let Some(&leader) = p.replicas.iter().find(|&&r| isr.contains(&r) && live(r)) {
        return Next { leader, isr, elr };
    }
    if let Some(&leader) = p.replicas.iter().find(|&&r| elr.contains(&r) && live(r)) {
        tracing::info!(
            topic,
            partition = p.partition,
            leader,
            "no live in-sync replica: an eligible leader replica takes over"
        );
        let elr = if policy.effective_min_isr(p) > 1 {
            in_replica_order(p, |r| r != leader && (elr.contains(&r) || isr.contains(&r)))
        } else {
            Vec::new()
        };
        return Next {
            leader,
            isr: vec![leader],
            elr,
        };
    }
    if policy.unclean_leader_election {
        if let Some(&leader) = p.replicas.iter().find(|&&r| live(r)) {
            tracing::warn!(topic, partition = p.partition, leader, in_sync = ?isr, eligible = ?elr, "unclean leader election: a replica out of the ISR leads; records it lacks are lost");
            return Next {
                leader,
                isr: vec![leader],
                elr: Vec::new(),
            };
        }
    }
    if p.leader != -1 {
        tracing::warn!(topic, partition = p.partition, in_sync = ?isr, eligible = ?elr, "no live in-sync or eligible replica can take over: the partition is offline");
    }
    Next {
        leader: -1,
        isr,
        elr,
    }
}

/// The record that takes `p` to `next`, if anything changes.
pub(crate) fn change_record(
    topic_id: Uuid,
    p: &PartitionImage,
    next: Next,
) -> Option<MetadataRecord> {
    if next.leader == p.leader && next.isr == p.isr && next.elr == p.elr {
        return None;
    }
    Some(MetadataRecord::PartitionChange {
        topic_id,
        partition: p.partition,
        leader: (next.leader != p.leader).then_some(next.leader),
        isr: (next.isr != p.isr).then_some(next.isr),
        replicas: None,
        elr: (next.elr != p.elr).then_some(next.elr),
        adding_replicas: None,
        removing_replicas: None,
    })
}

/// The changes `settle` makes to the partitions of `topic` that `pick` selects, each with
/// the ISR `pick` gives it.
fn changes_in(
    image: &MetadataImage,
    defaults: &ElectionDefaults,
    topic: &TopicImage,
    live: &dyn Fn(i32) -> bool,
    pick: &dyn Fn(&PartitionImage) -> Option<Vec<i32>>,
) -> Vec<MetadataRecord> {
    let policy = defaults.for_topic(image, &topic.name);
    changes_with(topic, &policy, live, pick)
}

fn changes_with(
    topic: &TopicImage,
    policy: &TopicPolicy,
    live: &dyn Fn(i32) -> bool,
    pick: &dyn Fn(&PartitionImage) -> Option<Vec<i32>>,
) -> Vec<MetadataRecord> {
    topic
        .partitions
        .values()
        .filter_map(|p| {
            let isr = pick(p)?;
            change_record(topic.topic_id, p, settle(&topic.name, p, isr, policy, live))
        })
        .collect()
}

/// The partition changes for fencing `broker`: out of every ISR it is in, and a new leader
/// (or none) for each partition it led.
pub fn when_fenced(
    image: &MetadataImage,
    defaults: &ElectionDefaults,
    broker: i32,
) -> Vec<MetadataRecord> {
    let live = |id: i32| id != broker && image.is_live(id);
    image
        .topics
        .values()
        .flat_map(|topic| {
            changes_in(image, defaults, topic, &live, &|p| {
                (p.isr.contains(&broker) || p.leader == broker)
                    .then(|| p.isr.iter().copied().filter(|&r| r != broker).collect())
            })
        })
        .collect()
}

/// The partition changes for unfencing `broker`: it leads every leaderless partition it
/// may lead (in the ISR, in the ELR, or any replica where unclean election is allowed).
pub fn when_unfenced(
    image: &MetadataImage,
    defaults: &ElectionDefaults,
    broker: i32,
) -> Vec<MetadataRecord> {
    let live = |id: i32| id == broker || image.is_live(id);
    image
        .topics
        .values()
        .flat_map(|topic| {
            changes_in(image, defaults, topic, &live, &|p| {
                (p.leader == -1 && p.replicas.contains(&broker)).then(|| p.isr.clone())
            })
        })
        .collect()
}

/// The partition changes for `broker` registering after an unclean shutdown (it may have
/// lost records it had not flushed): it leaves every ELR, except where it is the last
/// replica that could lead without losing data.
pub fn when_registered_uncleanly(image: &MetadataImage, broker: i32) -> Vec<MetadataRecord> {
    image
        .topics
        .values()
        .flat_map(|topic| {
            topic.partitions.values().filter_map(move |p| {
                if !p.elr.contains(&broker) || (p.isr.is_empty() && p.elr.len() == 1) {
                    return None;
                }
                let elr = p.elr.iter().copied().filter(|&r| r != broker).collect();
                Some(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: p.partition,
                    leader: None,
                    isr: None,
                    replicas: None,
                    elr: Some(elr),
                    adding_replicas: None,
                    removing_replicas: None,
                })
            })
        })
        .collect()
}

/// The partition changes for `topic`'s configs becoming `overrides`: the ELR follows a new
/// `min.insync.replicas`, and a leaderless partition may now elect (unclean election
/// turned on).
pub fn when_configured(
    image: &MetadataImage,
    defaults: &ElectionDefaults,
    topic: &TopicImage,
    overrides: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let policy = defaults.for_overrides(overrides);
    let live = |id: i32| image.is_live(id);
    changes_with(topic, &policy, &live, &|p| Some(p.isr.clone()))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::test_images::{apply, register};

    /// Brokers 1-3 live; topic t with partitions 0 (replicas 1,2,3) and 1 (replicas 2,1).
    fn cluster() -> (MetadataImage, Uuid) {
        let id = Uuid::new_v4();
        let mut records = Vec::new();
        for b in 1..=3 {
            records.push(register(b));
        }
        records.push(MetadataRecord::Topic {
            name: "t".into(),
            topic_id: id,
        });
        records.push(MetadataRecord::new_partition(id, 0, vec![1, 2, 3]));
        records.push(MetadataRecord::new_partition(id, 1, vec![2, 1]));
        (apply(&MetadataImage::default(), records), id)
    }

    const NO_ELR: ElectionDefaults = ElectionDefaults {
        eligible_leader_replicas: false,
        min_insync_replicas: 1,
        unclean_leader_election: false,
    };
    const ELR_MIN_2: ElectionDefaults = ElectionDefaults {
        eligible_leader_replicas: true,
        min_insync_replicas: 2,
        unclean_leader_election: false,
    };

    fn fence(image: &MetadataImage, d: &ElectionDefaults, broker: i32) -> MetadataImage {
        let epoch = image.brokers[&broker].epoch;
        let mut records = when_fenced(image, d, broker);
        records.push(MetadataRecord::FenceBroker {
            node_id: broker,
            broker_epoch: epoch,
        });
        apply(image, records)
    }

    fn unfence(image: &MetadataImage, d: &ElectionDefaults, broker: i32) -> MetadataImage {
        let mut records = when_unfenced(image, d, broker);
        records.push(MetadataRecord::UnfenceBroker {
            node_id: broker,
            broker_epoch: image.brokers[&broker].epoch,
        });
        apply(image, records)
    }

    /// (leader, isr, elr) of partition `index`.
    fn state(image: &MetadataImage, id: Uuid, index: i32) -> (i32, Vec<i32>, Vec<i32>) {
        let p = &image.topic_by_id(&id).unwrap().partitions[&index];
        (p.leader, p.isr.clone(), p.elr.clone())
    }

    #[test]
    fn a_fenced_leader_hands_over_to_the_next_live_in_sync_replica() {
        let d = &NO_ELR;
        let (image, id) = cluster();
        let image = fence(&image, d, 1);
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
        let image = fence(&image, d, 2);
        assert_eq!(state(&image, id, 0), (3, vec![3], vec![]));
        assert_eq!(state(&image, id, 1), (-1, vec![2], vec![]));
        let image = fence(&image, d, 3);
        assert_eq!(state(&image, id, 0), (-1, vec![3], vec![]));
        // The last in-sync replica returns and leads again; the others will join the ISR
        // when they catch up.
        let image = unfence(&image, d, 1);
        assert_eq!(state(&image, id, 0).0, -1, "1 is not in sync");
        let image = unfence(&image, d, 3);
        assert_eq!(state(&image, id, 0), (3, vec![3], vec![]));
        assert!(when_unfenced(&image, d, 3).is_empty());
    }

    #[test]
    fn replicas_leaving_an_isr_below_the_minimum_stay_eligible_to_lead() {
        let d = &ELR_MIN_2;
        let (image, id) = cluster();
        // 3 leaves an ISR that stays at the minimum: not eligible.
        let image = fence(&image, d, 3);
        assert_eq!(state(&image, id, 0), (1, vec![1, 2], vec![]));
        // 2 leaves it below: eligible, as the HW cannot move without it.
        let image = fence(&image, d, 2);
        assert_eq!(state(&image, id, 0), (1, vec![1], vec![2]));
        // The last member goes: the ISR empties into the ELR; offline.
        let image = fence(&image, d, 1);
        assert_eq!(state(&image, id, 0), (-1, vec![], vec![1, 2]));
        // 3 may not lead (it missed committed records); 2 may.
        let image = unfence(&image, d, 3);
        assert_eq!(state(&image, id, 0).0, -1);
        let image = unfence(&image, d, 2);
        assert_eq!(state(&image, id, 0), (2, vec![2], vec![1]));
        let p0 = &image.topic_by_id(&id).unwrap().partitions[&0];
        assert!(p0.leader_epoch > 1);
    }

    #[test]
    fn an_unclean_restart_leaves_the_elr_unless_it_is_the_last_hope() {
        let d = &ELR_MIN_2;
        let (image, id) = cluster();
        let image = fence(&fence(&fence(&image, d, 3), d, 2), d, 1);
        assert_eq!(state(&image, id, 0), (-1, vec![], vec![1, 2]));
        let image = apply(&image, when_registered_uncleanly(&image, 2));
        assert_eq!(state(&image, id, 0), (-1, vec![], vec![1]));
        assert!(
            when_registered_uncleanly(&image, 1).is_empty(),
            "the last eligible replica stays, to lead when it returns"
        );
        let image = unfence(&image, d, 2);
        assert_eq!(state(&image, id, 0).0, -1, "2 lost its eligibility");
        let image = unfence(&image, d, 1);
        assert_eq!(state(&image, id, 0), (1, vec![1], vec![]));
    }

    #[test]
    fn unclean_election_takes_any_live_replica_only_when_allowed() {
        let d = &NO_ELR;
        let (image, id) = cluster();
        let image = fence(&fence(&fence(&image, d, 3), d, 2), d, 1);
        assert_eq!(state(&image, id, 0), (-1, vec![1], vec![]));
        let image = unfence(&image, d, 3);
        assert_eq!(state(&image, id, 0).0, -1, "off by default");
        // Turned on for the topic: the config change itself elects 3.
        let topic = image.topic("t").unwrap().clone();
        let on = BTreeMap::from([(
            "unclean.leader.election.enable".to_string(),
            "true".to_string(),
        )]);
        let image = apply(&image, when_configured(&image, d, &topic, &on));
        assert_eq!(state(&image, id, 0), (3, vec![3], vec![]));
        // As a broker default it applies at the unfence.
        let unclean = ElectionDefaults {
            unclean_leader_election: true,
            ..NO_ELR
        };
        let (image, id) = cluster();
        let image = fence(&fence(&fence(&image, d, 3), d, 2), d, 1);
        let image = unfence(&image, &unclean, 2);
        assert_eq!(state(&image, id, 0), (2, vec![2], vec![]));
        assert_eq!(state(&image, id, 1), (2, vec![2], vec![]), "2 was in sync");
    }

    #[test]
    fn an_isr_back_at_the_minimum_clears_the_elr() {
        let d = &ELR_MIN_2;
        let (image, _) = cluster();
        let image = fence(&fence(&image, d, 3), d, 2);
        let p = image.topic("t").unwrap().partitions[&0].clone();
        let policy = d.for_topic(&image, "t");
        assert_eq!(elr_after(&p, &[1, 3], &policy), Vec::<i32>::new());
        assert_eq!(elr_after(&p, &[1], &policy), vec![2]);
        let lower = d.for_overrides(&BTreeMap::from([(
            "min.insync.replicas".to_string(),
            "1".to_string(),
        )]));
        assert_eq!(elr_after(&p, &[1], &lower), Vec::<i32>::new());
    }
}
