//! Tests of a partition's role: only the leader appends, metadata states apply in epoch
//! order, and a follower's truncation redoes the producer state from what is left.

use gregor_storage::config::LogConfig;
use gregor_storage::log::{Log, Recovery};
use uuid::Uuid;

use super::{AppendError, AppendOrigin, FetchIsolation, Partition, PartitionState};
use crate::test_batches::batch;

const NOW: i64 = 1_700_000_000_500;

fn open(dir: &std::path::Path, state: PartitionState) -> Partition {
    let log = Log::open(dir.to_path_buf(), LogConfig::default(), Recovery::default()).unwrap();
    Partition::open("t".into(), 0, Uuid::nil(), 1, log, state, None, 0)
}

fn led_by(leader: i32, leader_epoch: i32, partition_epoch: i32) -> PartitionState {
    PartitionState {
        leader,
        leader_epoch,
        partition_epoch,
        replicas: vec![1, 2],
        isr: [1, 2].into(),
        hw_min_isr: 1,
    }
}

#[test]
fn a_follower_refuses_every_write_with_not_leader() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), led_by(2, 0, 0));
    assert!(!p.is_leader());
    for origin in [AppendOrigin::Client, AppendOrigin::Coordinator] {
        assert!(matches!(
            p.append(&batch(-1, -1, -1, 1, 0), origin, NOW),
            Err(AppendError::NotLeader)
        ));
    }
    assert!(matches!(
        p.write_txn_marker(5, 0, true, 0, NOW),
        Err(AppendError::NotLeader)
    ));
    assert_eq!(p.log_end_offset(), 0, "nothing was written");

    // Leadership arrives: the new epoch is recorded where this leader's writes start.
    assert!(p.apply_state(led_by(1, 1, 1), 0));
    assert!(p.is_leader());
    assert_eq!(p.leader_epoch(), 1);
    let info = p
        .append(&batch(-1, -1, -1, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    assert_eq!(info.first_offset, 0);
    assert_eq!(p.with_log(|log| log.latest_epoch()), Some(1));
}

#[test]
fn stale_states_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), led_by(1, 3, 5));
    assert!(!p.apply_state(led_by(2, 2, 4), 0), "older partition epoch");
    assert!(p.is_leader());
    assert!(!p.apply_state(led_by(1, 3, 5), 0), "the same state again");
    let mut shrunk = led_by(1, 3, 6);
    shrunk.isr = [1].into();
    assert!(p.apply_state(shrunk, 0));
    assert_eq!(p.isr_size(), 1);
    assert_eq!(p.leader_epoch(), 3);
}

#[test]
fn truncation_redoes_the_producer_state_and_lowers_the_hw() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), led_by(1, 0, 0));
    // Producer 7 writes sequences 0..2 and 2..4 at offsets 0..2 and 2..4.
    p.append(&batch(7, 0, 0, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    p.append(&batch(7, 0, 2, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    assert!(matches!(p.truncate_to(2), Err(AppendError::NotFollower)));
    // Follower 2 has everything: the HW is the LEO.
    p.record_follower_fetch(2, 4, NOW, true).unwrap();
    assert_eq!(p.high_watermark(), 4);
    assert!(p.apply_state(led_by(2, 1, 1), 0));
    p.truncate_to(2).unwrap();
    assert_eq!(p.log_end_offset(), 2);
    assert_eq!(p.high_watermark(), 2);
    let read = p.read(0, 1 << 20, true, FetchIsolation::LogEnd).unwrap();
    assert_eq!(read.high_watermark, 2);

    // Leading again, the producer's next expected sequence is 2 (what is left), so the
    // batch that was cut is written anew instead of being taken for a duplicate.
    assert!(p.apply_state(led_by(1, 2, 2), 0));
    let info = p
        .append(&batch(7, 0, 2, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    assert_eq!(info.first_offset, 2);
}

#[test]
fn a_checkpoint_with_nothing_new_writes_no_producer_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path(), led_by(1, 0, 0));
    let snapshot = dir.path().join("producer-state.snapshot");
    p.append(&batch(7, 0, 0, 2, 0), AppendOrigin::Client, NOW)
        .unwrap();
    p.snapshot_producers(NOW, i64::MAX).unwrap();
    assert!(snapshot.exists());
    // Removed behind the partition's back: a checkpoint with nothing new does not notice,
    // because it writes (and fsyncs) nothing.
    std::fs::remove_file(&snapshot).unwrap();
    p.snapshot_producers(NOW, i64::MAX).unwrap();
    assert!(!snapshot.exists(), "nothing new: no write");
    // A new record, or a producer expiring, is new.
    p.append(&batch(7, 0, 2, 1, 0), AppendOrigin::Client, NOW)
        .unwrap();
    p.snapshot_producers(NOW, i64::MAX).unwrap();
    assert!(snapshot.exists());
    std::fs::remove_file(&snapshot).unwrap();
    p.snapshot_producers(NOW + 10, 1).unwrap();
    assert!(snapshot.exists(), "the producer expired: written");
}
