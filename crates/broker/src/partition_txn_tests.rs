//! Tests of the transactional side of [`Partition`]: LSO, read_committed reads, aborted
//! transactions, epoch fencing by markers, and recovery of all of it after a restart.

use std::path::Path;

use gregor_storage::batch::BatchIter;
use gregor_storage::config::LogConfig;
use gregor_storage::log::{Log, Recovery};
use uuid::Uuid;

use super::{AppendError, AppendOrigin, FetchIsolation, Partition, PartitionRead, PartitionState};
use crate::producer_state::code;
use crate::test_batches::batch;

fn txn_batch(producer_id: i64, epoch: i16, base_sequence: i32, n: i32) -> Vec<u8> {
    batch(producer_id, epoch, base_sequence, n, 0x10)
}

fn plain_batch(n: i32) -> Vec<u8> {
    batch(-1, -1, -1, n, 0)
}

fn open(dir: &Path) -> Partition {
    // Recovery::default() is an unclean start: everything is rescanned.
    let log = Log::open(dir.to_path_buf(), LogConfig::default(), Recovery::default()).unwrap();
    Partition::open(
        "t".into(),
        0,
        Uuid::nil(),
        1,
        log,
        PartitionState::single_replica(1, 0),
        None,
        0,
    )
}

const NOW: i64 = 1_700_000_000_500;

fn append(p: &Partition, b: &[u8]) -> i64 {
    p.append(b, AppendOrigin::Client, NOW).unwrap().first_offset
}

fn marker(p: &Partition, producer_id: i64, epoch: i16, commit: bool) -> i64 {
    p.write_txn_marker(producer_id, epoch, commit, 7, NOW)
        .unwrap()
}

/// `(base offset, last offset, is control)` of every returned batch.
fn batches(read: &PartitionRead) -> Vec<(i64, i64, bool)> {
    BatchIter::new(&read.records)
        .map(|(h, _)| (h.base_offset, h.last_offset(), h.is_control()))
        .collect()
}

fn read(p: &Partition, offset: i64, committed: bool) -> PartitionRead {
    let isolation = if committed {
        FetchIsolation::TxnCommitted
    } else {
        FetchIsolation::HighWatermark
    };
    p.read(offset, 1 << 20, true, isolation).unwrap()
}

fn producer_error(r: Result<impl std::fmt::Debug, AppendError>) -> i16 {
    match r {
        Err(AppendError::Producer(c, _)) => c,
        other => panic!("expected a producer error, got {other:?}"),
    }
}

#[test]
fn open_transaction_holds_the_lso_until_commit() {
    let d = tempfile::tempdir().unwrap();
    let p = open(d.path());
    assert_eq!(append(&p, &plain_batch(3)), 0);
    assert_eq!(p.last_stable_offset(), 3);
    assert_eq!(append(&p, &txn_batch(1, 0, 0, 2)), 3);
    assert_eq!(append(&p, &plain_batch(1)), 5);
    assert_eq!(append(&p, &txn_batch(1, 0, 2, 1)), 6);
    assert_eq!((p.high_watermark(), p.last_stable_offset()), (7, 3));

    let rc = read(&p, 0, true);
    assert_eq!(batches(&rc), vec![(0, 2, false)]);
    assert_eq!((rc.high_watermark, rc.last_stable_offset), (7, 3));
    assert!(rc.aborted.is_empty());
    // Beyond the LSO nothing is returned yet.
    assert!(read(&p, 3, true).records.is_empty());
    let ru = read(&p, 0, false);
    assert_eq!(batches(&ru).len(), 4);
    assert_eq!(
        ru.last_stable_offset, 3,
        "the real LSO for both isolation levels"
    );

    let hw = p.subscribe_hw();
    assert_eq!(marker(&p, 1, 0, true), 7);
    assert!(hw.has_changed().unwrap(), "a marker wakes long polls");
    assert_eq!((p.high_watermark(), p.last_stable_offset()), (8, 8));
    let rc = read(&p, 3, true);
    assert_eq!(
        batches(&rc),
        vec![(3, 4, false), (5, 5, false), (6, 6, false), (7, 7, true)]
    );
    assert!(rc.aborted.is_empty());
    let (header, _) = BatchIter::new(&rc.records).last().unwrap();
    assert!(header.is_control() && header.is_transactional());
    assert_eq!((header.producer_id, header.base_sequence), (1, -1));
}

#[test]
fn read_committed_gets_the_aborted_transactions_in_range() {
    let d = tempfile::tempdir().unwrap();
    let p = open(d.path());
    append(&p, &txn_batch(1, 0, 0, 2)); // 0..1
    append(&p, &txn_batch(2, 0, 0, 1)); // 2
    append(&p, &plain_batch(1)); // 3
    assert_eq!(marker(&p, 1, 0, false), 4);
    // Producer 2 still holds the LSO at 2.
    assert_eq!(p.last_stable_offset(), 2);
    let rc = read(&p, 0, true);
    assert_eq!(batches(&rc), vec![(0, 1, false)]);
    assert_eq!(rc.aborted, vec![(1, 0)]);
    assert_eq!(marker(&p, 2, 0, true), 5);
    assert_eq!(p.last_stable_offset(), 6);
    append(&p, &txn_batch(2, 0, 1, 1)); // 6
    assert_eq!(marker(&p, 2, 0, false), 7);

    let rc = read(&p, 0, true);
    assert_eq!(batches(&rc).len(), 7);
    assert_eq!(rc.aborted, vec![(1, 0), (2, 6)]);
    // From 3 the abort marker of producer 1 (at 4) is still ahead.
    assert_eq!(read(&p, 3, true).aborted, vec![(1, 0), (2, 6)]);
    assert_eq!(read(&p, 5, true).aborted, vec![(2, 6)]);
    assert!(read(&p, 8, true).aborted.is_empty());
    // A small read that ends before producer 2's second transaction.
    let small = p.read(2, 1, true, FetchIsolation::TxnCommitted).unwrap();
    assert_eq!(batches(&small), vec![(2, 2, false)]);
    assert_eq!(small.aborted, vec![(1, 0)]);
    // read_uncommitted: everything, no aborted list.
    let ru = read(&p, 0, false);
    assert_eq!(batches(&ru).len(), 7);
    assert!(ru.aborted.is_empty());

    let summaries = p.producer_summaries();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[1].producer_id, 2);
    assert_eq!(summaries[1].last_sequence, 1);
    assert_eq!(summaries[1].coordinator_epoch, 7);
    assert_eq!(summaries[1].current_txn_start_offset, -1);
    assert_eq!(summaries[1].last_timestamp, NOW);
}

#[test]
fn markers_fence_old_epochs() {
    let d = tempfile::tempdir().unwrap();
    let p = open(d.path());
    append(&p, &txn_batch(1, 2, 0, 1));
    assert_eq!(
        producer_error(p.write_txn_marker(1, 1, false, 7, NOW)),
        code::INVALID_PRODUCER_EPOCH
    );
    assert_eq!(p.last_stable_offset(), 0, "a refused marker ends nothing");
    // The coordinator aborts with a bumped epoch: the old producer is fenced.
    assert_eq!(marker(&p, 1, 3, false), 1);
    assert_eq!(
        producer_error(p.append(&txn_batch(1, 2, 1, 1), AppendOrigin::Client, NOW)),
        code::INVALID_PRODUCER_EPOCH
    );
    assert_eq!(p.log_end_offset(), 2);
    // The new epoch starts at sequence 0 and opens a new transaction.
    assert_eq!(append(&p, &txn_batch(1, 3, 0, 1)), 2);
    assert_eq!(p.last_stable_offset(), 2);
    assert_eq!(p.producer_summaries()[0].current_txn_start_offset, 2);
    // A non-transactional write while the transaction is open is refused, as in Kafka.
    assert_eq!(
        producer_error(p.append(&batch(1, 3, 1, 1, 0), AppendOrigin::Client, NOW)),
        code::INVALID_TXN_STATE
    );
    // Clients never write control batches; a transactional batch needs a producer id.
    assert_eq!(
        producer_error(p.append(&batch(5, 0, 0, 1, 0x30), AppendOrigin::Client, NOW)),
        code::INVALID_RECORD
    );
    assert_eq!(
        producer_error(p.append(&batch(-1, -1, -1, 1, 0x10), AppendOrigin::Client, NOW)),
        code::INVALID_RECORD
    );
    // A marker for a producer without a transaction here is still written.
    assert_eq!(marker(&p, 9, 0, true), 3);
    assert_eq!(marker(&p, 9, 0, false), 4);
    assert_eq!(read(&p, 0, true).aborted, vec![(1, 0)]);
    assert_eq!(p.last_stable_offset(), 2);
}

#[test]
fn a_replaced_coordinator_is_fenced() {
    let d = tempfile::tempdir().unwrap();
    let p = open(d.path());
    append(&p, &txn_batch(1, 0, 0, 1));
    // The coordinator of epoch 7 (its state partition's leader epoch) commits.
    assert_eq!(marker(&p, 1, 0, true), 1);
    append(&p, &txn_batch(1, 0, 1, 1));
    // One of an older epoch, which lost that partition, is refused and ends nothing...
    assert_eq!(
        producer_error(p.write_txn_marker(1, 0, false, 6, NOW)),
        code::TRANSACTION_COORDINATOR_FENCED
    );
    assert_eq!(p.log_end_offset(), 3);
    assert_eq!(p.last_stable_offset(), 2);
    // ...the current one and a newer one are not.
    assert_eq!(p.write_txn_marker(1, 0, true, 8, NOW).unwrap(), 3);
    assert_eq!(p.producer_summaries()[0].coordinator_epoch, 8);
    append(&p, &txn_batch(1, 0, 2, 1));
    assert_eq!(
        producer_error(p.write_txn_marker(1, 0, true, 7, NOW)),
        code::TRANSACTION_COORDINATOR_FENCED
    );
    // The epoch survives a restart (replayed from the log).
    drop(p);
    let p = open(d.path());
    assert_eq!(p.producer_summaries()[0].coordinator_epoch, 8);
    assert_eq!(
        producer_error(p.write_txn_marker(1, 0, true, 7, NOW)),
        code::TRANSACTION_COORDINATOR_FENCED
    );
}

/// Producer 1 aborted [0, 2] (marker at 3), producer 2's transaction is open from 1,
/// producer 3's from 5 (after an optional snapshot at 4).
fn scenario(dir: &Path, snapshot_at_4: bool) {
    let p = open(dir);
    append(&p, &txn_batch(1, 0, 0, 1)); // 0
    append(&p, &txn_batch(2, 4, 0, 1)); // 1
    append(&p, &txn_batch(1, 0, 1, 1)); // 2
    assert_eq!(marker(&p, 1, 0, false), 3);
    append(&p, &plain_batch(1)); // 4
    if snapshot_at_4 {
        p.snapshot_producers(NOW, i64::MAX).unwrap();
    }
    append(&p, &txn_batch(3, 0, 0, 2)); // 5..6
    assert_eq!(marker(&p, 3, 1, false), 7);
    assert_eq!(p.last_stable_offset(), 1);
    // Dropped without flush or checkpoint: as after kill -9.
}

fn check_recovered(dir: &Path) {
    let p = open(dir);
    assert_eq!(p.log_end_offset(), 8);
    assert_eq!(
        p.last_stable_offset(),
        1,
        "producer 2's transaction is still open"
    );
    let open_txns: Vec<(i64, i64)> = p
        .producer_summaries()
        .iter()
        .map(|s| (s.producer_id, s.current_txn_start_offset))
        .collect();
    assert_eq!(open_txns, vec![(1, -1), (2, 1), (3, -1)]);
    assert_eq!(p.producer_summaries()[2].producer_epoch, 1);
    assert_eq!(p.producer_summaries()[2].coordinator_epoch, 7);
    assert_eq!(marker(&p, 2, 4, true), 8);
    assert_eq!(p.last_stable_offset(), 9);
    let rc = read(&p, 0, true);
    assert_eq!(batches(&rc).len(), 8);
    assert_eq!(rc.aborted, vec![(1, 0), (3, 5)]);
    // Fencing survived too: producer 3 is at epoch 1.
    assert_eq!(
        producer_error(p.append(&txn_batch(3, 0, 2, 1), AppendOrigin::Client, NOW)),
        code::INVALID_PRODUCER_EPOCH
    );
}

fn truncate_txn_indexes(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "txnindex") {
            std::fs::write(&path, b"").unwrap();
        }
    }
}

#[test]
fn transactions_survive_a_restart_without_a_snapshot() {
    let d = tempfile::tempdir().unwrap();
    scenario(d.path(), false);
    assert!(!d.path().join("producer-state.snapshot").exists());
    check_recovered(d.path());

    // The index entries were lost too: the replay re-adds them.
    let d = tempfile::tempdir().unwrap();
    scenario(d.path(), false);
    truncate_txn_indexes(d.path());
    check_recovered(d.path());
}

#[test]
fn transactions_survive_a_restart_from_a_snapshot() {
    let d = tempfile::tempdir().unwrap();
    scenario(d.path(), true);
    assert!(d.path().join("producer-state.snapshot").exists());
    check_recovered(d.path());

    // Producer 2's open transaction (from 1) is known only from the snapshot, as the
    // replay starts at 5; the abort after the snapshot lost its index entry and the replay
    // re-adds it.
    let d = tempfile::tempdir().unwrap();
    scenario(d.path(), true);
    let index = d.path().join(format!("{:020}.txnindex", 0));
    assert_eq!(std::fs::metadata(&index).unwrap().len(), 68);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(34)
        .unwrap();
    check_recovered(d.path());
}

#[test]
fn a_segment_roll_snapshots_the_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path().to_path_buf(), config, Recovery::default()).unwrap();
    let p = Partition::open(
        "t".into(),
        0,
        Uuid::nil(),
        1,
        log,
        PartitionState::single_replica(1, 0),
        None,
        0,
    );
    let snapshot = dir.path().join("producer-state.snapshot");
    append(&p, &txn_batch(7, 0, 0, 3));
    assert!(!snapshot.exists(), "no roll yet");
    let mut seq = 3;
    while p.with_log(|l| l.segment_count()) == 1 {
        append(&p, &txn_batch(7, 0, seq, 20));
        seq += 20;
    }
    assert!(snapshot.exists(), "the roll wrote a snapshot");
    let text = std::fs::read_to_string(&snapshot).unwrap();
    assert!(text.contains("\"7\""), "it holds producer 7: {text}");
}

#[test]
fn the_fast_path_appends_only_inside_an_open_transaction_at_its_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    let not_open = |r: Result<_, AppendError>| matches!(r, Err(AppendError::NotInOngoingTxn));
    assert!(not_open(p.append_to_ongoing_txn(
        &txn_batch(7, 0, 0, 1),
        NOW,
        (7, 0)
    )));
    assert_eq!(p.log_end_offset(), 0, "nothing written");
    append(&p, &txn_batch(7, 0, 0, 1));
    let info = p
        .append_to_ongoing_txn(&txn_batch(7, 0, 1, 1), NOW, (7, 0))
        .unwrap();
    assert_eq!(info.first_offset, 1);
    assert!(not_open(p.append_to_ongoing_txn(
        &txn_batch(7, 1, 0, 1),
        NOW,
        (7, 1)
    )));
    p.write_txn_marker(7, 0, true, 0, NOW).unwrap();
    assert!(
        not_open(p.append_to_ongoing_txn(&txn_batch(7, 0, 2, 1), NOW, (7, 0))),
        "a marker ended the transaction: the coordinator must be asked again"
    );
}

#[test]
fn a_marker_between_a_remote_verification_and_its_write_refuses_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let p = open(dir.path());
    for origin in [AppendOrigin::Client, AppendOrigin::Coordinator] {
        let seq = if origin == AppendOrigin::Client {
            0
        } else {
            -1
        };
        // Verified, nothing in between: written.
        let token = p.begin_txn_verification(7);
        p.append_verified(&txn_batch(7, 0, seq, 1), NOW, origin, 7, token)
            .unwrap();
        marker(&p, 7, 0, true);
        // The transaction ended (a marker) while the next write was being verified.
        let token = p.begin_txn_verification(7);
        marker(&p, 7, 0, false);
        let end = p.log_end_offset();
        let refused = p.append_verified(&txn_batch(7, 0, seq, 1), NOW, origin, 7, token);
        assert_eq!(
            producer_error(refused),
            code::INVALID_TXN_STATE,
            "{origin:?}"
        );
        assert_eq!(p.log_end_offset(), end, "nothing written");
    }
}
