//! Partition reassignment (KIP-455): moving a partition's replicas to other brokers, or
//! changing how many it has, without losing a record.
//!
//! Pure: a partition's image in, the `PartitionChange` record out. A reassignment to target
//! replicas T of a partition whose replicas are O:
//! 1. **Start**: the replicas become T followed by O \ T; T \ O are *adding* (they open the
//!    log and copy it from the leader), O \ T *removing*. ISR and leader stay.
//! 2. **Completion**, checked at every ISR change: once every member of T is in the ISR,
//!    the replicas become T, the ISR and ELR lose the removed replicas, and if the leader
//!    is one of them the first in-sync live member of T takes over (a new leader epoch).
//!    The removed brokers then delete their copies.
//! 3. **Cancel** (or a new target equal to O): back to O, the added replicas leave the ISR.
//!
//! A new reassignment of a partition already moving replaces the old one, counted from the
//! original replicas (as KIP-455).

use crate::image::PartitionImage;
use crate::record::MetadataRecord;
use uuid::Uuid;

/// Why a reassignment of one partition is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The target list is empty, names a broker twice or one that is not registered.
    InvalidAssignment(String),
    /// A cancel of a partition that is not moving.
    NoneInProgress,
}

/// The record that starts (or replaces, or at once completes) a reassignment of `p` to
/// `target`; `None` when nothing changes. `registered` says whether a broker id is known;
/// `live` whether it may lead.
pub fn start(
    topic_id: Uuid,
    p: &PartitionImage,
    target: &[i32],
    registered: &dyn Fn(i32) -> bool,
    live: &dyn Fn(i32) -> bool,
) -> Result<Option<MetadataRecord>, Refusal> {
    if target.is_empty() {
        return Err(Refusal::InvalidAssignment(
            "the target replica list is empty".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for &b in target {
        if !seen.insert(b) {
            return Err(Refusal::InvalidAssignment(format!(
                "broker {b} appears twice in the target replicas {target:?}"
            )));
        }
        if !registered(b) {
            return Err(Refusal::InvalidAssignment(format!(
                "broker {b} of the target replicas {target:?} is not registered"
            )));
        }
    }
    let original = p.original_replicas();
    if target == original.as_slice() {
        return Ok(if p.is_reassigning() {
            revert(topic_id, p, live)?
        } else {
            None
        });
    }
    let mut replicas = target.to_vec();
    replicas.extend(original.iter().filter(|r| !target.contains(r)));
    let next = PartitionImage {
        isr: p
            .isr
            .iter()
            .copied()
            .filter(|r| replicas.contains(r))
            .collect(),
        elr: p
            .elr
            .iter()
            .copied()
            .filter(|r| replicas.contains(r))
            .collect(),
        adding_replicas: target
            .iter()
            .copied()
            .filter(|r| !original.contains(r))
            .collect(),
        removing_replicas: original
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect(),
        replicas,
        ..p.clone()
    };
    let next = completed(&next, live).unwrap_or(next);
    Ok(change(topic_id, p, with_leader(next, live)))
}

/// The record that cancels `p`'s reassignment: back to its original replicas.
pub fn cancel(
    topic_id: Uuid,
    p: &PartitionImage,
    live: &dyn Fn(i32) -> bool,
) -> Result<Option<MetadataRecord>, Refusal> {
    if !p.is_reassigning() {
        return Err(Refusal::NoneInProgress);
    }
    revert(topic_id, p, live)
}

/// The record that completes `p`'s reassignment, if every target replica is in its ISR
/// (`p` as it is after an ISR change).
pub fn completion(
    topic_id: Uuid,
    p: &PartitionImage,
    live: &dyn Fn(i32) -> bool,
) -> Option<MetadataRecord> {
    let next = completed(p, live)?;
    change(topic_id, p, with_leader(next, live))
}

fn revert(
    topic_id: Uuid,
    p: &PartitionImage,
    live: &dyn Fn(i32) -> bool,
) -> Result<Option<MetadataRecord>, Refusal> {
    let replicas = p.original_replicas();
    let isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err(Refusal::InvalidAssignment(format!(
            "none of the original replicas {replicas:?} is in sync (ISR {:?}): the reassignment cannot be cancelled",
            p.isr
        )));
    }
    let next = PartitionImage {
        elr: p
            .elr
            .iter()
            .copied()
            .filter(|r| replicas.contains(r))
            .collect(),
        isr,
        replicas,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p.clone()
    };
    Ok(change(topic_id, p, with_leader(next, live)))
}

/// `p` with its reassignment completed, if every target replica is in the ISR.
fn completed(p: &PartitionImage, live: &dyn Fn(i32) -> bool) -> Option<PartitionImage> {
    if !p.is_reassigning() {
        return None;
    }
    let target = p.target_replicas();
    if !target.iter().all(|r| p.isr.contains(r)) {
        return None;
    }
    // Nobody to lead among the target: wait (a leader must be live and in sync).
    if !target.iter().any(|&r| live(r)) {
        return None;
    }
    Some(PartitionImage {
        isr: p
            .isr
            .iter()
            .copied()
            .filter(|r| target.contains(r))
            .collect(),
        elr: p
            .elr
            .iter()
            .copied()
            .filter(|r| target.contains(r))
            .collect(),
        replicas: target,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p.clone()
    })
}

/// `next` with a leader that is one of its in-sync replicas: the current one if it still
/// is, else the first live in-sync replica in assignment order (else none).
fn with_leader(mut next: PartitionImage, live: &dyn Fn(i32) -> bool) -> PartitionImage {
    if next.leader != -1 && next.isr.contains(&next.leader) {
        return next;
    }
    next.leader = next
        .replicas
        .iter()
        .copied()
        .find(|&r| next.isr.contains(&r) && live(r))
        .unwrap_or(-1);
    next
}

/// The change record taking `p` to `next` (`None` if nothing differs).
fn change(topic_id: Uuid, p: &PartitionImage, next: PartitionImage) -> Option<MetadataRecord> {
    if next == *p {
        return None;
    }
    let differs = |a: &Vec<i32>, b: &Vec<i32>| (a != b).then(|| a.clone());
    Some(MetadataRecord::PartitionChange {
        topic_id,
        partition: p.partition,
        leader: (next.leader != p.leader).then_some(next.leader),
        isr: differs(&next.isr, &p.isr),
        replicas: differs(&next.replicas, &p.replicas),
        elr: differs(&next.elr, &p.elr),
        adding_replicas: differs(&next.adding_replicas, &p.adding_replicas),
        removing_replicas: differs(&next.removing_replicas, &p.removing_replicas),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MetadataImage;
    use crate::test_images::{apply, register};

    fn image_with(replicas: Vec<i32>) -> (MetadataImage, Uuid) {
        let id = Uuid::new_v4();
        let mut records: Vec<MetadataRecord> = (1..=4).map(register).collect();
        records.push(MetadataRecord::Topic {
            name: "t".into(),
            topic_id: id,
        });
        records.push(MetadataRecord::new_partition(id, 0, replicas));
        (apply(&MetadataImage::default(), records), id)
    }

    fn p(image: &MetadataImage) -> PartitionImage {
        image.topic("t").unwrap().partitions[&0].clone()
    }

    fn yes(_: i32) -> bool {
        true
    }

    fn registered(b: i32) -> bool {
        (1..=4).contains(&b)
    }

    fn set_isr(image: &MetadataImage, id: Uuid, isr: Vec<i32>) -> MetadataImage {
        let mut records = vec![MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            leader: None,
            isr: Some(isr),
            replicas: None,
            elr: None,
            adding_replicas: None,
            removing_replicas: None,
        }];
        let after = apply(image, records.clone());
        records.extend(completion(id, &p(&after), &yes));
        apply(image, records)
    }

    #[test]
    fn a_move_adds_first_and_removes_once_the_targets_are_in_sync() {
        let (image, id) = image_with(vec![1, 2]);
        let record = start(id, &p(&image), &[2, 3], &registered, &yes).unwrap();
        let moving = apply(&image, record.into_iter().collect());
        let m = p(&moving);
        assert_eq!(m.replicas, vec![2, 3, 1]);
        assert_eq!(
            (m.adding_replicas.clone(), m.removing_replicas.clone()),
            (vec![3], vec![1])
        );
        assert_eq!(
            (m.leader, m.isr.clone()),
            (1, vec![1, 2]),
            "leader and ISR stay"
        );
        assert_eq!(m.target_replicas(), vec![2, 3]);
        assert_eq!(m.original_replicas(), vec![2, 1]);
        // 3 catches up and joins: done; the leader (1) was removed, so 2 leads.
        let done = p(&set_isr(&moving, id, vec![1, 2, 3]));
        assert_eq!(done.replicas, vec![2, 3]);
        assert_eq!(done.isr, vec![2, 3]);
        assert_eq!((done.leader, done.leader_epoch), (2, 1));
        assert!(!done.is_reassigning());
    }

    #[test]
    fn a_new_target_replaces_a_moving_one_and_cancel_goes_back() {
        let (image, id) = image_with(vec![1, 2]);
        let moving = apply(
            &image,
            start(id, &p(&image), &[2, 3], &registered, &yes)
                .unwrap()
                .into_iter()
                .collect(),
        );
        // Replaced: counted from the original replicas {1, 2}.
        let again = apply(
            &moving,
            start(id, &p(&moving), &[1, 2, 4], &registered, &yes)
                .unwrap()
                .into_iter()
                .collect(),
        );
        let a = p(&again);
        assert_eq!(a.replicas, vec![1, 2, 4]);
        assert_eq!(
            (a.adding_replicas.clone(), a.removing_replicas.clone()),
            (vec![4], vec![])
        );
        let cancelled = apply(
            &again,
            cancel(id, &p(&again), &yes).unwrap().into_iter().collect(),
        );
        let c = p(&cancelled);
        assert_eq!(
            (c.replicas.clone(), c.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
        assert!(!c.is_reassigning());
        assert_eq!(cancel(id, &c, &yes), Err(Refusal::NoneInProgress));
        // The same replicas as now: nothing to do.
        assert_eq!(start(id, &c, &[1, 2], &registered, &yes), Ok(None));
    }

    #[test]
    fn raising_and_lowering_the_replication_factor() {
        let (image, id) = image_with(vec![1]);
        let up = apply(
            &image,
            start(id, &p(&image), &[1, 2, 3], &registered, &yes)
                .unwrap()
                .into_iter()
                .collect(),
        );
        assert_eq!(p(&up).adding_replicas, vec![2, 3]);
        let half = set_isr(&up, id, vec![1, 2]);
        assert!(p(&half).is_reassigning(), "3 is not in sync yet");
        let full = p(&set_isr(&half, id, vec![1, 2, 3]));
        assert_eq!(
            (full.replicas.clone(), full.isr.clone(), full.leader),
            (vec![1, 2, 3], vec![1, 2, 3], 1)
        );
        // Lowering to in-sync replicas completes at once.
        let (image, id) = image_with(vec![1, 2, 3]);
        let record = start(id, &p(&image), &[3], &registered, &yes).unwrap();
        let down = p(&apply(&image, record.into_iter().collect()));
        assert_eq!(
            (down.replicas, down.isr, down.leader),
            (vec![3], vec![3], 3)
        );
    }

    #[test]
    fn bad_targets_are_refused() {
        let (image, id) = image_with(vec![1, 2]);
        let p0 = p(&image);
        for (target, says) in [
            (vec![], "empty"),
            (vec![2, 2], "twice"),
            (vec![2, 9], "not registered"),
        ] {
            match start(id, &p0, &target, &registered, &yes) {
                Err(Refusal::InvalidAssignment(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{target:?}: {other:?}"),
            }
        }
    }
}
