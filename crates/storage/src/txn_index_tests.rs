//! Tests for the aborted-transaction index of a [`Log`]: placement by
//! marker offset, range lookups across segments, persistence, recovery and
//! truncation.

use std::path::Path;

use super::*;
use crate::batch::test_util::simple;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, clean: bool, recovery_point: i64) -> Log {
    Log::open(
        dir.to_path_buf(),
        config(),
        Recovery {
            clean_shutdown: clean,
            recovery_point,
            log_start_offset: None,
            ..Recovery::default()
        },
    )
    .unwrap()
}

fn txn(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    }
}

/// 30 single-record batches of 200 bytes: segments of 5 offsets each
/// (bases 0, 5, .., 25). Aborted: producer 1 [2, 4], producer 2 [3, 12]
/// (open across two segments while 1 aborted), producer 3 [20, 21].
fn populated(dir: &Path) -> Log {
    let mut log = open(dir, false, 0);
    for i in 0..30 {
        log.append_as_leader(&simple(1, i, 200), 0, 0).unwrap();
    }
    assert_eq!(log.segment_count(), 6);
    assert!(log.append_aborted_txn(txn(1, 2, 4, 3)).unwrap());
    assert!(log.append_aborted_txn(txn(2, 3, 12, 13)).unwrap());
    assert!(log.append_aborted_txn(txn(3, 20, 21, 22)).unwrap());
    log
}

fn all_entries(log: &Log) -> Vec<(i64, AbortedTxn)> {
    log.segments()
        .iter()
        .flat_map(|s| s.txn_index().entries().map(move |t| (s.base_offset(), t)))
        .collect()
}

#[test]
fn entries_live_in_the_marker_segment_and_answer_ranges() {
    let d = tempfile::tempdir().unwrap();
    let mut log = populated(d.path());
    assert_eq!(
        all_entries(&log),
        vec![
            (0, txn(1, 2, 4, 3)),
            (10, txn(2, 3, 12, 13)),
            (20, txn(3, 20, 21, 22))
        ]
    );
    assert!(!log.append_aborted_txn(txn(2, 3, 12, 13)).unwrap());
    let ids = |v: Vec<AbortedTxn>| v.iter().map(|t| t.producer_id).collect::<Vec<_>>();
    assert_eq!(ids(log.collect_aborted_txns(0, 2)), Vec::<i64>::new());
    assert_eq!(ids(log.collect_aborted_txns(0, 3)), vec![1]);
    // Producer 2's txn started at 3 but its marker is two segments later.
    assert_eq!(ids(log.collect_aborted_txns(3, 5)), vec![1, 2]);
    assert_eq!(ids(log.collect_aborted_txns(5, 10)), vec![2]);
    assert_eq!(ids(log.collect_aborted_txns(13, 20)), Vec::<i64>::new());
    assert_eq!(ids(log.collect_aborted_txns(0, 30)), vec![1, 2, 3]);
    assert_eq!(ids(log.collect_aborted_txns(22, 30)), Vec::<i64>::new());
    let f = segment::segment_file(d.path(), 10, ".txnindex");
    assert_eq!(fs::metadata(f).unwrap().len(), 34);
}

#[test]
#[should_panic(expected = "beyond the log end")]
fn marker_beyond_the_log_end_panics() {
    let d = tempfile::tempdir().unwrap();
    let mut log = populated(d.path());
    log.append_aborted_txn(txn(9, 29, 30, 31)).unwrap();
}

#[test]
fn entries_survive_clean_and_unclean_reopen() {
    let d = tempfile::tempdir().unwrap();
    let log = populated(d.path());
    let want = all_entries(&log);
    log.close().unwrap();
    let log = open(d.path(), true, 30);
    assert_eq!(all_entries(&log), want);
    drop(log);
    // Unclean, without a flush: entries were written at once.
    let mut log = open(d.path(), false, 0);
    assert_eq!(all_entries(&log), want);
    log.append_aborted_txn(txn(4, 25, 27, 28)).unwrap();
    drop(log); // kill -9: nothing flushed
    let log = open(d.path(), false, 0);
    assert_eq!(all_entries(&log).last(), Some(&(25, txn(4, 25, 27, 28))));
}

#[test]
fn recovery_drops_entries_whose_marker_was_lost() {
    let d = tempfile::tempdir().unwrap();
    let log = populated(d.path());
    drop(log);
    // Tear the segment holding offsets 20..24 inside the batch at 21: the
    // marker of producer 3 and everything after it is gone.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(segment::segment_file(d.path(), 20, ".log"))
        .unwrap();
    f.set_len(200 + 50).unwrap();
    let log = open(d.path(), false, 15);
    assert_eq!(log.log_end_offset(), 21);
    assert_eq!(
        all_entries(&log),
        vec![(0, txn(1, 2, 4, 3)), (10, txn(2, 3, 12, 13))]
    );
    assert_eq!(
        fs::metadata(segment::segment_file(d.path(), 20, ".txnindex"))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn clean_load_drops_a_torn_entry() {
    let d = tempfile::tempdir().unwrap();
    let log = populated(d.path());
    log.close().unwrap();
    let p = segment::segment_file(d.path(), 10, ".txnindex");
    let mut bytes = fs::read(&p).unwrap();
    bytes.extend_from_slice(&[0; 5]);
    fs::write(&p, bytes).unwrap();
    let log = open(d.path(), true, 30);
    assert_eq!(all_entries(&log).len(), 3);
    assert_eq!(fs::metadata(&p).unwrap().len(), 34);
}

#[test]
fn truncation_drops_entries_at_or_beyond_the_new_end() {
    let d = tempfile::tempdir().unwrap();
    let mut log = populated(d.path());
    log.truncate_to(22).unwrap();
    assert_eq!(all_entries(&log).len(), 3);
    log.truncate_to(21).unwrap();
    assert_eq!(all_entries(&log).len(), 2);
    log.truncate_to(12).unwrap();
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(all_entries(&log), vec![(0, txn(1, 2, 4, 3))]);
    assert!(!segment::segment_file(d.path(), 20, ".txnindex").exists());
    assert_eq!(
        fs::metadata(segment::segment_file(d.path(), 10, ".txnindex"))
            .unwrap()
            .len(),
        0
    );
    // The offset is written again: a new abort there is accepted.
    log.append_as_leader(&simple(1, 12, 200), 0, 0).unwrap();
    assert!(log.append_aborted_txn(txn(5, 12, 12, 13)).unwrap());
    log.truncate_to(0).unwrap();
    assert!(all_entries(&log).is_empty());
    assert!(log.collect_aborted_txns(0, 100).is_empty());
}

#[test]
fn retention_renames_and_later_removes_the_txn_index() {
    let d = tempfile::tempdir().unwrap();
    let mut log = populated(d.path());
    log.delete_records_before(11, 30).unwrap();
    assert_eq!(log.segments()[0].base_offset(), 10);
    for base in [0, 5] {
        assert!(!segment::segment_file(d.path(), base, ".txnindex").exists());
        assert!(segment::segment_file(d.path(), base, ".txnindex.deleted").exists());
    }
    assert_eq!(log.pending_deleted_files().len(), 8);
    let ids: Vec<i64> = log
        .collect_aborted_txns(11, 30)
        .iter()
        .map(|t| t.producer_id)
        .collect();
    assert_eq!(ids, vec![2, 3]);
    // A replayed marker whose segment is gone is ignored.
    assert!(!log.append_aborted_txn(txn(1, 2, 4, 3)).unwrap());
    log.remove_deleted_files(i64::MAX).unwrap();
    assert!(!segment::segment_file(d.path(), 0, ".txnindex.deleted").exists());
}

#[test]
fn sync_txn_indexes_makes_entries_durable_without_a_log_flush() {
    let d = tempfile::tempdir().unwrap();
    let mut log = populated(d.path());
    log.sync_txn_indexes().unwrap();
    assert!(log.segments().iter().any(|s| s.is_dirty()));
    let p = segment::segment_file(d.path(), 20, ".txnindex");
    assert_eq!(fs::metadata(p).unwrap().len(), 34);
}
