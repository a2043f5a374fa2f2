//! Tests of replication on a partition: the leader's HW over its ISR, ISR changes, a
//! follower's byte-identical copy with its producer state, and truncation where logs diverge.

use std::collections::BTreeSet;

use gregor_storage::config::LogConfig;
use gregor_storage::log::{Log, Recovery};
use uuid::Uuid;

use super::{AppendError, AppendOrigin, FetchIsolation, Partition, PartitionState};
use crate::partition::FollowerFetchError;
use crate::test_batches::batch;

const NOW: i64 = 1_700_000_000_000;
const LAG_MS: i64 = 30_000;

fn state(leader: i32, leader_epoch: i32, partition_epoch: i32, isr: &[i32]) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch,
        partition_epoch,
        replicas: vec![1, 2, 3],
        isr: isr.iter().copied().collect::<BTreeSet<i32>>(),
        hw_min_isr: 1,
    }
}

fn open(dir: &std::path::Path, node_id: i32, state: PartitionState) -> Partition {
    let log = Log::open(dir.to_path_buf(), LogConfig::default(), Recovery::default()).unwrap();
    Partition::open("t".into(), 0, Uuid::nil(), node_id, log, state, None, NOW)
}

fn all(p: &Partition) -> bytes::Bytes {
    p.read(p.log_start_offset(), 1 << 20, true, FetchIsolation::LogEnd)
        .unwrap()
        .records
}

/// Copies everything `leader` has past `follower`'s end, as one fetch would.
fn replicate(leader: &Partition, follower: &Partition) {
    let read = leader
        .read(
            follower.log_end_offset(),
            1 << 20,
            true,
            FetchIsolation::LogEnd,
        )
        .unwrap();
    if !read.records.is_empty() {
        follower
            .append_as_follower(&read.records, follower.leader_epoch(), NOW)
            .unwrap();
    }
    follower
        .update_from_leader(leader.high_watermark(), leader.log_start_offset())
        .unwrap();
}

#[test]
fn the_leaders_hw_is_the_smallest_leo_in_the_isr() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), 1, state(1, 0, 0, &[1, 2, 3]));
    p.append(&batch(-1, -1, -1, 3, 0), AppendOrigin::Client, NOW)
        .unwrap();
    assert_eq!(p.log_end_offset(), 3);
    assert_eq!(p.high_watermark(), 0, "no follower has it yet");
    assert_eq!(p.record_follower_fetch(2, 3, NOW, true), Ok(None));
    assert_eq!(p.high_watermark(), 0, "follower 3 has not fetched");
    p.record_follower_fetch(3, 1, NOW, true).unwrap();
    assert_eq!(p.high_watermark(), 1);
    p.record_follower_fetch(3, 3, NOW, true).unwrap();
    assert_eq!(p.high_watermark(), 3);
    assert_eq!(
        p.record_follower_fetch(4, 3, NOW, true),
        Err(FollowerFetchError::NotReplica)
    );
    // A follower's fetch at an older offset never moves the HW back.
    p.record_follower_fetch(2, 2, NOW, true).unwrap();
    assert_eq!(p.high_watermark(), 3);
}

#[test]
fn the_hw_stands_still_while_the_isr_is_below_its_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let strict = |isr: &[i32], partition_epoch| PartitionState {
        hw_min_isr: 2,
        ..state(1, 0, partition_epoch, isr)
    };
    let p = open(dir.path(), 1, strict(&[1], 0));
    p.append(&batch(-1, -1, -1, 3, 0), AppendOrigin::Client, NOW)
        .unwrap();
    p.record_follower_fetch(2, 3, NOW, true).unwrap();
    assert_eq!(
        p.high_watermark(),
        0,
        "the leader alone is below min.insync.replicas: nothing commits"
    );
    // The ISR grows back to the minimum: the HW moves.
    assert!(p.apply_state(strict(&[1, 2], 1), NOW));
    assert_eq!(p.high_watermark(), 3);
    // A lower minimum (a config change) lets a lone leader's HW move too.
    p.append(&batch(-1, -1, -1, 2, 3), AppendOrigin::Client, NOW)
        .unwrap();
    assert!(p.apply_state(strict(&[1], 2), NOW));
    assert_eq!(p.high_watermark(), 3);
    assert!(p.apply_state(state(1, 0, 2, &[1]), NOW));
    assert_eq!(p.high_watermark(), 5);
}

#[test]
fn a_lagging_follower_leaves_the_isr_and_a_caught_up_one_joins() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), 1, state(1, 0, 0, &[1, 2, 3]));
    p.append(&batch(-1, -1, -1, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    p.record_follower_fetch(2, 2, NOW + 1_000, true).unwrap();
    assert_eq!(
        p.isr_shrink(NOW + LAG_MS, LAG_MS),
        None,
        "3 has its lag time"
    );
    let shrink = p.isr_shrink(NOW + LAG_MS + 1, LAG_MS).expect("3 lags");
    assert_eq!(shrink.isr, vec![1, 2]);
    assert_eq!((shrink.leader_epoch, shrink.partition_epoch), (0, 0));
    assert_eq!(
        p.isr_shrink(NOW + LAG_MS + 2, LAG_MS),
        None,
        "one change at a time"
    );
    assert_eq!(
        p.high_watermark(),
        0,
        "the HW waits for 3 until the shrink commits"
    );
    p.isr_change_failed(0);
    assert!(
        p.isr_shrink(NOW + LAG_MS + 3, LAG_MS).is_some(),
        "asked again"
    );
    // The metadata brings the shrink: the HW moves past 3.
    assert!(p.apply_state(state(1, 0, 1, &[1, 2]), NOW + LAG_MS + 4));
    assert_eq!(p.high_watermark(), 2);
    assert_eq!(p.isr_size(), 2);
    // 3 comes back and reaches the HW: it asks to join, once it is a live broker again
    // (a fenced one, crashed or shutting down, may fetch but not join: KIP-841).
    assert_eq!(
        p.record_follower_fetch(3, 1, NOW + LAG_MS + 5, true),
        Ok(None)
    );
    assert_eq!(
        p.record_follower_fetch(3, 2, NOW + LAG_MS + 5, false),
        Ok(None)
    );
    let join = p
        .record_follower_fetch(3, 2, NOW + LAG_MS + 6, true)
        .unwrap()
        .expect("3 caught up");
    assert_eq!(join.isr, vec![1, 2, 3]);
    assert_eq!(join.partition_epoch, 1);
    // Writes while the expansion is pending already wait for 3.
    p.append(&batch(-1, -1, -1, 1, 0), AppendOrigin::Client, NOW)
        .unwrap();
    p.record_follower_fetch(2, 3, NOW + LAG_MS + 7, true)
        .unwrap();
    assert_eq!(p.high_watermark(), 2);
    p.record_follower_fetch(3, 3, NOW + LAG_MS + 8, true)
        .unwrap();
    assert_eq!(p.high_watermark(), 3);
}

#[test]
fn a_follower_copies_bytes_and_producer_state_and_refuses_duplicates_as_leader() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("l"), 1, state(1, 0, 0, &[1, 2]));
    let follower = open(&dir.path().join("f"), 2, state(1, 0, 0, &[1, 2]));
    let first = batch(7, 0, 0, 2, 0);
    leader.append(&first, AppendOrigin::Client, NOW).unwrap();
    leader
        .append(&batch(7, 0, 2, 1, 0), AppendOrigin::Client, NOW)
        .unwrap();
    replicate(&leader, &follower);
    assert_eq!(all(&follower), all(&leader), "byte for byte");
    assert_eq!(
        follower.high_watermark(),
        0,
        "the leader's HW had not moved"
    );
    leader.record_follower_fetch(2, 3, NOW, true).unwrap();
    replicate(&leader, &follower);
    assert_eq!(follower.high_watermark(), 3);
    // A stale response (fetched under epoch 0) is refused once the epoch moved on.
    assert!(follower.apply_state(state(1, 1, 1, &[1, 2]), NOW));
    let stale = leader
        .read(0, 1 << 20, true, FetchIsolation::LogEnd)
        .unwrap();
    assert!(matches!(
        follower.append_as_follower(&stale.records, 0, NOW),
        Err(AppendError::NotFollower)
    ));
    // The follower becomes leader: the producer's retry is a duplicate there too.
    assert!(follower.apply_state(state(2, 2, 2, &[2]), NOW));
    assert!(matches!(
        follower.append(&first, AppendOrigin::Client, NOW),
        Err(AppendError::Duplicate {
            first_offset: 0,
            ..
        })
    ));
    assert!(matches!(
        follower.append_as_follower(&stale.records, 2, NOW),
        Err(AppendError::NotFollower)
    ));
}

#[test]
fn a_deposed_leader_truncates_its_divergent_tail_to_the_new_leaders_log() {
    let dir = tempfile::tempdir().unwrap();
    let old = open(&dir.path().join("old"), 1, state(1, 0, 0, &[1, 2]));
    let new = open(&dir.path().join("new"), 2, state(1, 0, 0, &[1, 2]));
    old.append(&batch(-1, -1, -1, 1, 0), AppendOrigin::Client, NOW)
        .unwrap();
    replicate(&old, &new);
    // Written by the old leader (acks=1) but never fetched by the other replica.
    old.append(&batch(-1, -1, -1, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    assert_eq!(old.log_end_offset(), 3);
    // Replica 2 is elected at epoch 1 and writes its own records.
    assert!(new.apply_state(state(2, 1, 1, &[2]), NOW));
    new.append(&batch(-1, -1, -1, 1, 0), AppendOrigin::Client, NOW)
        .unwrap();
    assert!(old.apply_state(state(2, 1, 1, &[2]), NOW));
    // The old leader's fetch names its last epoch (0) at offset 3: it diverges at 1.
    let last_epoch = old.last_fetched_epoch();
    assert_eq!(last_epoch, 0);
    let (epoch, end) = new.divergence(last_epoch, old.log_end_offset()).unwrap();
    assert_eq!((epoch, end), (0, 1));
    assert_eq!(old.truncate_to_divergence(epoch, end).unwrap(), 1);
    assert_eq!(new.divergence(old.last_fetched_epoch(), 1), None);
    replicate(&new, &old);
    assert_eq!(all(&old), all(&new), "identical again");
    assert_eq!(old.last_fetched_epoch(), 1);
}

#[test]
fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    let dir = tempfile::tempdir().unwrap();
    let follower = open(dir.path(), 2, state(1, 0, 0, &[1, 2]));
    follower
        .append_as_follower(&batch(-1, -1, -1, 2, 0), 0, NOW)
        .unwrap();
    follower.truncate_fully_and_start_at(50).unwrap();
    assert_eq!(
        (
            follower.log_start_offset(),
            follower.log_end_offset(),
            follower.high_watermark()
        ),
        (50, 50, 50)
    );
}

#[test]
fn a_leadership_that_wrote_nothing_leaves_no_epoch_behind_on_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir.path().join("a"), 1, state(1, 0, 0, &[1, 2]));
    let b = open(&dir.path().join("b"), 2, state(1, 0, 0, &[1, 2]));
    a.append(&batch(-1, -1, -1, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    replicate(&a, &b);
    // b leads at epoch 1 and writes nothing; a leads at epoch 2, b follows it.
    assert!(b.apply_state(state(2, 1, 1, &[2]), NOW));
    assert!(a.apply_state(state(1, 2, 2, &[1]), NOW));
    assert!(b.apply_state(state(1, 2, 2, &[1]), NOW));
    assert_eq!(
        b.last_fetched_epoch(),
        1,
        "b's cache holds its own epoch at its end"
    );
    let (epoch, end) = a.divergence(1, b.log_end_offset()).unwrap();
    assert_eq!((epoch, end), (0, 2), "a never had epoch 1");
    assert_eq!(b.truncate_to_divergence(epoch, end).unwrap(), 2);
    assert_eq!(b.last_fetched_epoch(), 0, "the empty epoch is gone");
    assert_eq!(
        a.divergence(b.last_fetched_epoch(), b.log_end_offset()),
        None,
        "b's next fetch does not diverge again"
    );
    assert_eq!(
        a.record_follower_fetch(2, 2, NOW, true)
            .unwrap()
            .map(|c| c.isr),
        Some(vec![1, 2]),
        "and b may rejoin the ISR"
    );
}

#[test]
fn a_truncated_followers_producer_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = open(&dir.path().join("old"), 1, state(1, 0, 0, &[1, 2, 3]));
    let f_dir = dir.path().join("f");
    let f = open(&f_dir, 2, state(1, 0, 0, &[1, 2, 3]));
    let new = open(&dir.path().join("new"), 3, state(1, 0, 0, &[1, 2, 3]));
    old.append(&batch(7, 0, 0, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    replicate(&old, &f);
    replicate(&old, &new);
    // A tail only f copies, and f's producer state snapshotted over it (as at a segment
    // roll or a clean shutdown).
    old.append(&batch(7, 0, 2, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    replicate(&old, &f);
    f.snapshot_producers(NOW, i64::MAX).unwrap();
    // `new` leads at epoch 1 and another producer writes past the snapshot's offset.
    assert!(new.apply_state(state(3, 1, 1, &[3]), NOW));
    new.append(&batch(8, 0, 0, 3, 0), AppendOrigin::Client, NOW)
        .unwrap();
    assert!(f.apply_state(state(3, 1, 1, &[3]), NOW));
    let (epoch, end) = new
        .divergence(f.last_fetched_epoch(), f.log_end_offset())
        .unwrap();
    assert_eq!(f.truncate_to_divergence(epoch, end).unwrap(), 2);
    replicate(&new, &f);
    assert_eq!(f.log_end_offset(), 5);
    drop(f);
    // Restarted, f leads: producer 7 wrote sequences 0-1 here, so 2 is its next one.
    let f = open(&f_dir, 2, state(2, 2, 2, &[2]));
    f.append(&batch(7, 0, 2, 1, 0), AppendOrigin::Client, NOW)
        .expect("producer 7's next sequence");
}
