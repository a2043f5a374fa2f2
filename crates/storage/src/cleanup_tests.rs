//! Tests for retention, DeleteRecords and compaction of a [`Log`].

use std::path::Path;

use super::cleaning::SwapStep;
use super::*;
use crate::batch::test_util::simple;
use crate::batch::BatchIter;
use crate::cleaner::{build_cleaned, CleanStats};
use crate::log_dir::LogDir;
use crate::records::parse_records;
use crate::records::test_util::{keyed_batch, KeyValue};

fn open_log(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir.to_path_buf(), config, Recovery::default()).unwrap()
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn assert_out_of_range(log: &Log, offset: i64) {
    assert!(
        matches!(
            log.read(offset, 1000, i64::MAX, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ),
        "read at {offset} should be out of range"
    );
}

/// Appends one single-record batch per entry of `ts`, rolling after each
/// group: returns the base offsets of the segments created.
fn segments_with_timestamps(log: &mut Log, groups: &[&[i64]]) -> Vec<i64> {
    let mut bases = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        bases.push(log.log_end_offset());
        for &ts in group.iter() {
            log.append_as_leader(&simple(1, ts, 100), 0, 0).unwrap();
        }
        if g + 1 < groups.len() {
            log.roll(0).unwrap();
        }
    }
    bases
}

// ---------------------------------------------------------------- retention

#[test]
fn retention_by_time_deletes_expired_prefix_only() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 5_000,
        ..LogConfig::default()
    };
    let mut log = open_log(d.path(), config);
    // Segments: expired, expired, NOT expired, expired, active (expired).
    let bases = segments_with_timestamps(
        &mut log,
        &[
            &[1_000, 1_100],
            &[2_000, 4_999],
            &[3_000, 9_000],
            &[1_500],
            &[100],
        ],
    );
    let hw = log.log_end_offset();
    let out = log.apply_retention(10_000, hw).unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(out.bytes_deleted, 400);
    assert_eq!(out.log_start_offset, bases[2]);
    assert_eq!(log.log_start_offset(), bases[2]);
    assert_eq!(log.segments()[0].base_offset(), bases[2]);
    assert_eq!(log.segment_count(), 3);
    assert_out_of_range(&log, bases[2] - 1);
    assert_eq!(
        log.read(bases[2], 1000, i64::MAX, true)
            .unwrap()
            .first_offset,
        bases[2]
    );
    for b in &bases[..2] {
        assert!(!segment::segment_file(d.path(), *b, ".log").exists());
        assert!(segment::segment_file(d.path(), *b, ".log.deleted").exists());
        assert!(segment::segment_file(d.path(), *b, ".index.deleted").exists());
        assert!(segment::segment_file(d.path(), *b, ".timeindex.deleted").exists());
        assert!(segment::segment_file(d.path(), *b, ".txnindex.deleted").exists());
    }
    // Once segment 2 expires everything but the active segment goes, even
    // though the active segment is expired too.
    let out = log.apply_retention(100_000, hw).unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), bases[4]);
    let out = log.apply_retention(100_000, hw).unwrap();
    assert_eq!(out.segments_deleted, 0);
    assert_eq!(log.log_end_offset(), hw);
}

#[test]
fn retention_keeps_segments_at_or_above_high_watermark() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 0,
        ..LogConfig::default()
    };
    let mut log = open_log(d.path(), config);
    let bases = segments_with_timestamps(&mut log, &[&[1, 1], &[1, 1], &[1, 1], &[1]]);
    // HW inside segment 1: only segment 0 may go.
    let out = log.apply_retention(10_000, bases[1] + 1).unwrap();
    assert_eq!(out.segments_deleted, 1);
    assert_eq!(log.log_start_offset(), bases[1]);
    // HW exactly at segment 2's base: segment 1 holds only offsets below.
    let out = log.apply_retention(10_000, bases[2]).unwrap();
    assert_eq!(out.segments_deleted, 1);
    assert_eq!(log.log_start_offset(), bases[2]);
    // Disabled policy: nothing is deleted by time.
    let mut config = log.config().clone();
    config.cleanup_delete = false;
    log.set_config(config);
    let out = log.apply_retention(10_000, log.log_end_offset()).unwrap();
    assert_eq!(out.segments_deleted, 0);
}

#[test]
fn retention_by_size() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 1_200,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let mut log = open_log(d.path(), config);
    let ts: &[i64] = &[1, 2, 3, 4, 5];
    let bases = segments_with_timestamps(&mut log, &[ts, ts, ts, ts, ts, ts]);
    assert_eq!(log.size_bytes(), 3_000);
    let out = log.apply_retention(0, log.log_end_offset()).unwrap();
    // Deletes while the rest still holds >= 1200 bytes: 3 segments.
    assert_eq!(out.segments_deleted, 3);
    assert_eq!(out.bytes_deleted, 1_500);
    assert_eq!(log.size_bytes(), 1_500);
    assert_eq!(log.log_start_offset(), bases[3]);
    let out = log.apply_retention(0, log.log_end_offset()).unwrap();
    assert_eq!(out.segments_deleted, 0);
}

#[test]
fn roll_if_due_rolls_only_non_empty_old_segments() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1_000,
        ..LogConfig::default()
    };
    let mut log = open_log(d.path(), config);
    let created = log.segments()[0].created_ms();
    assert!(!log.roll_if_due(created + 5_000).unwrap()); // empty
    log.append_as_leader(&simple(1, 1, 100), 0, created + 10)
        .unwrap();
    assert!(!log.roll_if_due(created + 999).unwrap());
    assert_eq!(log.segment_count(), 1);
    assert!(log.roll_if_due(created + 1_000).unwrap());
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.segments()[1].base_offset(), 1);
    assert!(!log.roll_if_due(created + 10_000).unwrap());
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn deleted_files_are_removed_after_the_delay_and_on_open() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 10,
        ..LogConfig::default()
    };
    let mut log = open_log(d.path(), config.clone());
    segments_with_timestamps(&mut log, &[&[1], &[2], &[3]]);
    let out = log.apply_retention(10_000, log.log_end_offset()).unwrap();
    assert_eq!(out.segments_deleted, 2);
    assert_eq!(files_with_suffix(d.path(), ".deleted").len(), 8);
    assert_eq!(log.pending_deleted_files().len(), 8);
    assert_eq!(log.remove_deleted_files(10_000 + 59_999).unwrap(), 0);
    assert_eq!(files_with_suffix(d.path(), ".deleted").len(), 8);
    assert_eq!(log.remove_deleted_files(10_000 + 60_000).unwrap(), 8);
    assert!(files_with_suffix(d.path(), ".deleted").is_empty());
    assert!(log.pending_deleted_files().is_empty());

    // Leftovers of a crash are removed by open.
    log.append_as_leader(&simple(1, 1, 100), 0, 0).unwrap();
    log.roll(0).unwrap();
    log.append_as_leader(&simple(1, 1, 100), 0, 0).unwrap();
    log.apply_retention(20_000, log.log_end_offset()).unwrap();
    assert_eq!(files_with_suffix(d.path(), ".deleted").len(), 4);
    let start = log.log_start_offset();
    drop(log);
    let log = open_log(d.path(), config);
    assert!(files_with_suffix(d.path(), ".deleted").is_empty());
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn log_start_offset_survives_reopen_through_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    let ld = LogDir::open(&root, crate::clock::system()).unwrap();
    let mut log = ld.open_log("t", 0, LogConfig::default()).unwrap();
    for _ in 0..4 {
        log.append_as_leader(&simple(2, 1, 100), 0, 0).unwrap(); // 0..=7
    }
    log.roll(0).unwrap();
    for _ in 0..4 {
        log.append_as_leader(&simple(2, 1, 100), 0, 0).unwrap(); // 8..=15
    }
    let hw = log.log_end_offset();
    // Inside the first segment, in the middle of batch 4..=5: no segment
    // can be deleted yet.
    assert_eq!(log.delete_records_before(5, hw).unwrap(), 5);
    assert_eq!(log.segment_count(), 2);
    assert_out_of_range(&log, 4);
    let r = log.read(5, 1000, i64::MAX, false).unwrap();
    assert_eq!(r.first_offset, 4);
    log.flush().unwrap();
    let hw = log.log_end_offset();
    ld.write_checkpoints(&[crate::log_dir::CheckpointEntry::of("t", 0, &log, hw)])
        .unwrap();
    log.close().unwrap();
    ld.mark_clean_shutdown(None).unwrap();
    drop(ld);

    for clean in [true, false] {
        let ld = LogDir::open(&root, crate::clock::system()).unwrap();
        assert_eq!(ld.was_clean_shutdown(), clean);
        let log = ld.open_log("t", 0, LogConfig::default()).unwrap();
        assert_eq!(log.log_start_offset(), 5);
        assert_eq!(log.segments()[0].base_offset(), 0);
        assert_out_of_range(&log, 0);
        assert_out_of_range(&log, 4);
        let r = log.read(5, 1000, i64::MAX, false).unwrap();
        assert_eq!(r.first_offset, 4);
        assert_eq!(
            log.read(15, 1000, i64::MAX, false).unwrap().first_offset,
            14
        );
    }
}

#[test]
fn delete_records_before() {
    let d = tempfile::tempdir().unwrap();
    let mut log = open_log(d.path(), LogConfig::default());
    let bases = segments_with_timestamps(&mut log, &[&[1, 1, 1], &[1, 1, 1], &[1, 1, 1]]);
    let hw = 7;
    // Above the high watermark, negative: rejected, nothing changes.
    for bad in [8, 9, -2] {
        assert!(matches!(
            log.delete_records_before(bad, hw),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
    }
    assert_eq!(log.log_start_offset(), 0);
    // Within segment 1: segment 0 goes, segment 1 stays.
    assert_eq!(log.delete_records_before(4, hw).unwrap(), 4);
    assert_eq!(log.segments()[0].base_offset(), bases[1]);
    assert_eq!(files_with_suffix(d.path(), ".deleted").len(), 4);
    assert_out_of_range(&log, 3);
    assert_eq!(log.read(4, 1000, i64::MAX, false).unwrap().first_offset, 4);
    // Never moves backwards.
    assert_eq!(log.delete_records_before(2, hw).unwrap(), 4);
    // -1 means the high watermark; segment 1 ends at 6 <= 7.
    assert_eq!(log.delete_records_before(-1, hw).unwrap(), 7);
    assert_eq!(log.segment_count(), 1);
    assert_out_of_range(&log, 6);
    assert_eq!(log.read(7, 1000, i64::MAX, false).unwrap().first_offset, 7);
    // Up to the log end: the active segment stays, reads below fail.
    assert_eq!(log.delete_records_before(-1, 9).unwrap(), 9);
    assert_eq!(log.segment_count(), 1);
    assert_out_of_range(&log, 8);
    assert!(log
        .read(9, 1000, i64::MAX, false)
        .unwrap()
        .records
        .is_empty());
}

// --------------------------------------------------------------- compaction

/// `(offset, key, value, batch timestamp)` of every appended record.
type Model = Vec<(i64, Option<String>, Option<String>, i64)>;
/// `(offset, key, value)` as read back.
type Rec = (i64, Option<String>, Option<String>);

fn put(log: &mut Log, model: &mut Model, ts: i64, recs: &[(Option<&str>, Option<&str>)]) {
    let raw: Vec<KeyValue<'_>> = recs
        .iter()
        .map(|(k, v)| (k.map(str::as_bytes), v.map(str::as_bytes)))
        .collect();
    let info = log.append_as_leader(&keyed_batch(ts, &raw), 0, 0).unwrap();
    for (i, (k, v)) in recs.iter().enumerate() {
        model.push((
            info.first_offset + i as i64,
            k.map(str::to_owned),
            v.map(str::to_owned),
            ts,
        ));
    }
}

/// Every record readable from the log, through `Log::read`.
fn read_records(log: &Log) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut off = log.log_start_offset();
    loop {
        let r = log.read(off, 700, i64::MAX, true).unwrap();
        if r.records.is_empty() {
            break;
        }
        let mut last = off;
        for (h, b) in BatchIter::new(&r.records) {
            assert!(batch::verify_crc(b), "bad CRC at {}", h.base_offset);
            if h.compression() == 0 && !h.is_control() {
                for rec in parse_records(b, &h).unwrap() {
                    let o = h.base_offset + rec.offset_delta as i64;
                    let s = |x: Option<&[u8]>| x.map(|x| String::from_utf8(x.to_vec()).unwrap());
                    out.push((o, s(rec.key), s(rec.value)));
                }
            }
            assert!(h.last_offset() >= last);
            last = h.last_offset();
        }
        off = last + 1;
    }
    out
}

fn all(model: &Model) -> Vec<Rec> {
    model
        .iter()
        .map(|(o, k, v, _)| (*o, k.clone(), v.clone()))
        .collect()
}

/// What a full clean of offsets below `end` must leave.
fn compacted(model: &Model, end: i64, tombstone_horizon: i64) -> Vec<Rec> {
    let mut latest = std::collections::HashMap::new();
    for (o, k, _, _) in model.iter().filter(|r| r.0 < end) {
        latest.insert(k.clone(), *o);
    }
    model
        .iter()
        .filter(|(o, k, v, ts)| {
            *o >= end
                || (k.is_some() && latest[k] == *o && !(v.is_none() && *ts < tombstone_horizon))
        })
        .map(|(o, k, v, _)| (*o, k.clone(), v.clone()))
        .collect()
}

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_compact: true,
        cleanup_delete: false,
        index_interval_bytes: 64,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

/// Four segments of updates to keys k0..k5 (with a tombstone for k5 and a
/// keyless record), plus an active segment that updates k0.
fn populate(log: &mut Log, model: &mut Model) {
    for seg in 0..4i64 {
        for i in 0..6i64 {
            let k1 = format!("k{}", (i + seg) % 5);
            let v1 = format!("s{seg}-{i}");
            let k2 = format!("k{}", (i * 3 + 1) % 5);
            let v2 = format!("t{seg}-{i}");
            put(
                log,
                model,
                100 + seg * 10 + i,
                &[(Some(&k1), Some(&v1)), (Some(&k2), Some(&v2))],
            );
        }
        match seg {
            0 => put(
                log,
                model,
                100,
                &[(Some("k5"), Some("gone")), (None, Some("nokey"))],
            ),
            1 => put(log, model, 110, &[(Some("k5"), None)]),
            _ => {}
        }
        log.roll(0).unwrap();
    }
    put(
        log,
        model,
        500,
        &[(Some("k0"), Some("active")), (Some("k1"), Some("active"))],
    );
}

fn clean_once(log: &mut Log, now_ms: i64, budget: usize) -> Option<(CleanStats, i64)> {
    let plan = log.plan_cleaning(now_ms)?;
    let end = plan.dirty_end;
    let cleaned = build_cleaned(&plan, budget).unwrap();
    Some((log.swap_cleaned(cleaned).unwrap(), end))
}

#[test]
fn compaction_keeps_latest_per_key_with_offsets() {
    let d = tempfile::tempdir().unwrap();
    let mut log = open_log(d.path(), compact_config());
    let mut model = Model::new();
    populate(&mut log, &mut model);
    let active_base = log.segments().last().unwrap().base_offset();
    let active_bytes = fs::read(segment::segment_file(d.path(), active_base, ".log")).unwrap();
    let before = log.size_bytes();
    assert_eq!(read_records(&log), all(&model));

    let plan = log.plan_cleaning(1_000).unwrap();
    assert_eq!(plan.segments.len(), 4);
    assert_eq!(plan.dirty_start, 0);
    assert_eq!(plan.dirty_end, active_base);
    let cleaned = build_cleaned(&plan, 1 << 20).unwrap();
    assert_eq!(cleaned.cleaned_through, active_base);
    assert!(files_with_suffix(d.path(), ".log.cleaned").len() >= 2);
    let stats = log.swap_cleaned(cleaned).unwrap();
    assert!(stats.swapped);
    assert!(stats.bytes_after < stats.bytes_before);
    assert!(log.size_bytes() < before);
    assert_eq!(log.cleaned_through_offset(), active_base);
    assert!(files_with_suffix(d.path(), ".cleaned").is_empty());
    assert!(files_with_suffix(d.path(), ".swap").is_empty());

    // Horizon 0: the k5 tombstone (ts 110) stays, k5's value goes.
    let want = compacted(&model, active_base, 0);
    assert!(want
        .iter()
        .any(|r| r.1.as_deref() == Some("k5") && r.2.is_none()));
    assert!(!want.iter().any(|r| r.2.as_deref() == Some("gone")));
    assert_eq!(read_records(&log), want);
    // Every surviving offset reads back the batch holding it.
    for (o, _, _) in &want {
        let r = log.read(*o, 1, i64::MAX, true).unwrap();
        let h = BatchHeader::parse(&r.records).unwrap();
        assert!(h.base_offset <= *o && *o <= h.last_offset());
    }
    // The active segment is untouched.
    assert_eq!(
        fs::read(segment::segment_file(d.path(), active_base, ".log")).unwrap(),
        active_bytes
    );
    assert_eq!(log.log_end_offset(), model.last().unwrap().0 + 1);
    // Nothing dirty left: no plan.
    assert!(log.plan_cleaning(1_000).is_none());

    // Reopen cleanly and uncleanly (full recovery accepts the gaps).
    log.close().unwrap();
    let log = Log::open(
        d.path().to_path_buf(),
        compact_config(),
        Recovery {
            clean_shutdown: true,
            recovery_point: active_base + 2,
            log_start_offset: None,
            ..Recovery::default()
        },
    )
    .unwrap();
    assert_eq!(read_records(&log), want);
    assert_eq!(log.cleaned_through_offset(), active_base);
    drop(log);
    let mut log = open_log(d.path(), compact_config());
    assert_eq!(read_records(&log), want);
    assert_eq!(log.log_end_offset(), model.last().unwrap().0 + 1);
    put(&mut log, &mut model, 600, &[(Some("k9"), Some("after"))]);
    assert_eq!(
        read_records(&log).last().unwrap().2.as_deref(),
        Some("after")
    );
}

#[test]
fn tombstones_dropped_only_after_delete_retention() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.0,
        ..compact_config()
    };
    let mut log = open_log(d.path(), config);
    let mut model = Model::new();
    put(
        &mut log,
        &mut model,
        100,
        &[(Some("a"), Some("1")), (Some("b"), Some("1"))],
    );
    put(&mut log, &mut model, 200, &[(Some("a"), None)]);
    log.roll(0).unwrap();
    put(&mut log, &mut model, 300, &[(Some("c"), Some("1"))]);
    log.roll(0).unwrap();
    put(&mut log, &mut model, 400, &[(Some("d"), Some("1"))]);

    // now 1000, retention 1000: horizon 0, the tombstone stays.
    let (stats, end) = clean_once(&mut log, 1_000, 1 << 20).unwrap();
    assert!(stats.swapped);
    let want = compacted(&model, end, 0);
    assert_eq!(
        want,
        vec![
            (1, Some("b".into()), Some("1".into())),
            (2, Some("a".into()), None),
            (3, Some("c".into()), Some("1".into())),
            (4, Some("d".into()), Some("1".into())),
        ]
    );
    assert_eq!(read_records(&log), want);
    // Still within delete.retention.ms (batch ts 200, now 1199): kept.
    log.roll(0).unwrap();
    put(&mut log, &mut model, 1_100, &[(Some("e"), Some("1"))]);
    let (_, end) = clean_once(&mut log, 1_199, 1 << 20).unwrap();
    assert_eq!(read_records(&log), compacted(&model, end, 199));
    assert!(read_records(&log).contains(&(2, Some("a".into()), None)));
    // Past it: dropped.
    log.roll(0).unwrap();
    put(&mut log, &mut model, 1_300, &[(Some("f"), Some("1"))]);
    let (stats, end) = clean_once(&mut log, 1_201, 1 << 20).unwrap();
    assert!(stats.swapped);
    let got = read_records(&log);
    assert_eq!(got, compacted(&model, end, 201));
    assert!(!got.iter().any(|r| r.1.as_deref() == Some("a")));
    assert_eq!(got[0], (1, Some("b".into()), Some("1".into())));
}

#[test]
fn planning_respects_policy_lag_and_ratio() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        min_compaction_lag_ms: 1_000,
        ..compact_config()
    };
    let mut log = open_log(d.path(), config.clone());
    let mut model = Model::new();
    put(&mut log, &mut model, 100, &[(Some("a"), Some("1"))]);
    log.roll(0).unwrap();
    put(&mut log, &mut model, 1_000, &[(Some("a"), Some("2"))]);
    log.roll(0).unwrap();
    put(&mut log, &mut model, 1_000, &[(Some("a"), Some("3"))]);
    // Only segment 0 is old enough at 1500.
    let plan = log.plan_cleaning(1_500).unwrap();
    assert_eq!(plan.segments.len(), 1);
    assert_eq!(plan.dirty_end, 1);
    assert_eq!(log.plan_cleaning(2_000).unwrap().segments.len(), 2);
    // Not compacted: no plan.
    log.set_config(LogConfig {
        cleanup_compact: false,
        ..config.clone()
    });
    assert!(log.plan_cleaning(2_000).is_none());
    // Dirty ratio: after a clean, one new dirty segment out of several
    // clean ones is below 0.5 unless max.compaction.lag forces it.
    log.set_config(LogConfig {
        min_compaction_lag_ms: 0,
        ..compact_config()
    });
    for i in 0..5 {
        log.roll(0).unwrap();
        put(
            &mut log,
            &mut model,
            100,
            &[(Some(&format!("x{i}")), Some("1"))],
        );
    }
    log.roll(0).unwrap();
    let (stats, _) = clean_once(&mut log, 2_000, 1 << 20).unwrap();
    assert!(stats.swapped);
    assert!(log.plan_cleaning(2_000).is_none());
    put(&mut log, &mut model, 100, &[(Some("x0"), Some("2"))]);
    log.roll(0).unwrap();
    assert!(log.plan_cleaning(2_000).is_none());
    log.set_config(LogConfig {
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: 1_000,
        ..compact_config()
    });
    assert!(log.plan_cleaning(1_100).is_none());
    let plan = log.plan_cleaning(1_101).unwrap();
    assert!(plan.dirty_start > 0);
}

#[test]
fn dedupe_buffer_bounds_each_clean() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        min_cleanable_dirty_ratio: 0.0,
        ..compact_config()
    };
    let mut log = open_log(d.path(), config);
    let mut model = Model::new();
    for seg in 0..3 {
        for k in 0..10 {
            put(
                &mut log,
                &mut model,
                100,
                &[(Some(&format!("k{k}")), Some(&format!("{seg}")))],
            );
        }
        log.roll(0).unwrap();
    }
    put(&mut log, &mut model, 100, &[(Some("k0"), Some("active"))]);
    let full_end = 30;
    // Room for three 2-byte keys.
    let budget = 3 * (2 + crate::cleaner::MAP_ENTRY_OVERHEAD);
    let plan = log.plan_cleaning(1_000).unwrap();
    let cleaned = build_cleaned(&plan, budget).unwrap();
    assert_eq!(cleaned.map_entries, 3);
    assert!(cleaned.map_bytes <= budget);
    assert_eq!(cleaned.cleaned_through, 3);
    assert!(cleaned.segments.is_empty()); // nothing superseded yet
    let stats = log.swap_cleaned(cleaned).unwrap();
    assert!(stats.swapped);
    assert_eq!(log.cleaned_through_offset(), 3);
    assert_eq!(read_records(&log), all(&model));

    let mut rounds = 1;
    while let Some((stats, _)) = clean_once(&mut log, 1_000, budget) {
        assert!(stats.swapped);
        rounds += 1;
        assert!(rounds < 50, "no progress");
        let through = log.cleaned_through_offset();
        // Offsets at or above the map end are never touched.
        let got = read_records(&log);
        let tail: Vec<Rec> = all(&model).into_iter().filter(|r| r.0 >= through).collect();
        assert!(got.ends_with(&tail));
    }
    assert_eq!(rounds, 10);
    assert_eq!(log.cleaned_through_offset(), full_end);
    assert_eq!(read_records(&log), compacted(&model, full_end, 0));
}

#[test]
fn control_and_compressed_batches_are_kept_whole() {
    let d = tempfile::tempdir().unwrap();
    let mut log = open_log(d.path(), compact_config());
    let mut model = Model::new();
    put(&mut log, &mut model, 100, &[(Some("a"), Some("1"))]);
    // A "gzip" batch (opaque payload) and a control batch.
    let mut gz = simple(3, 100, 120);
    gz[22] |= 0x01;
    batch::write_crc(&mut gz);
    let mut ctl = simple(1, 100, 80);
    ctl[22] |= 0x20;
    batch::write_crc(&mut ctl);
    let gz_at = log.append_as_leader(&gz, 0, 0).unwrap().first_offset;
    let ctl_at = log.append_as_leader(&ctl, 0, 0).unwrap().first_offset;
    put(&mut log, &mut model, 100, &[(Some("a"), Some("2"))]);
    log.roll(0).unwrap();
    put(&mut log, &mut model, 100, &[(Some("b"), Some("1"))]);
    let (stats, _) = clean_once(&mut log, 1_000, 1 << 20).unwrap();
    assert!(stats.swapped);
    assert_eq!(stats.records_removed, 1);
    assert_eq!(read_records(&log), compacted(&model, 6, 0));
    for (at, raw) in [(gz_at, &gz), (ctl_at, &ctl)] {
        let r = log.read(at, 1, i64::MAX, true).unwrap();
        assert_eq!(&r.records[..], &expected_stored(raw, at)[..]);
    }
}

fn expected_stored(producer: &[u8], base: i64) -> Vec<u8> {
    let mut b = producer.to_vec();
    batch::set_base_offset(&mut b, base);
    batch::set_partition_leader_epoch(&mut b, 0);
    b
}

#[test]
fn append_between_plan_and_swap() {
    let d = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2_000,
        ..compact_config()
    };
    let mut log = open_log(d.path(), config);
    let mut model = Model::new();
    populate(&mut log, &mut model);
    let plan = log.plan_cleaning(1_000).unwrap();
    let end = plan.dirty_end;
    let cleaned = build_cleaned(&plan, 1 << 20).unwrap();
    let segs = log.segment_count();
    for i in 0..40 {
        put(
            &mut log,
            &mut model,
            700,
            &[(Some(&format!("k{}", i % 3)), Some("late"))],
        );
    }
    assert!(log.segment_count() > segs, "appends rolled new segments");
    let stats = log.swap_cleaned(cleaned).unwrap();
    assert!(stats.swapped);
    assert_eq!(read_records(&log), compacted(&model, end, 0));
    put(&mut log, &mut model, 800, &[(Some("z"), Some("1"))]);
    assert_eq!(read_records(&log), compacted(&model, end, 0));
}

#[test]
fn stale_plan_is_discarded() {
    let d = tempfile::tempdir().unwrap();
    let mut log = open_log(d.path(), compact_config());
    let mut model = Model::new();
    populate(&mut log, &mut model);
    let plan = log.plan_cleaning(1_000).unwrap();
    let cleaned = build_cleaned(&plan, 1 << 20).unwrap();
    assert!(!files_with_suffix(d.path(), ".cleaned").is_empty());
    let second = log.segments()[1].base_offset();
    log.delete_records_before(second, log.log_end_offset())
        .unwrap();
    let stats = log.swap_cleaned(cleaned).unwrap();
    assert!(!stats.swapped);
    assert!(files_with_suffix(d.path(), ".cleaned").is_empty());
    let want: Vec<Rec> = all(&model).into_iter().filter(|r| r.0 >= second).collect();
    assert_eq!(read_records(&log), want);
    // A fresh plan works.
    let (stats, end) = clean_once(&mut log, 1_000, 1 << 20).unwrap();
    assert!(stats.swapped);
    let model2: Model = model.iter().filter(|r| r.0 >= second).cloned().collect();
    assert_eq!(read_records(&log), compacted(&model2, end, 0));
}

#[test]
fn crash_at_each_swap_step_leaves_a_complete_log() {
    let steps = [
        SwapStep::GapsPersisted,
        SwapStep::FirstSwapRenamed,
        SwapStep::Committed,
        SwapStep::FirstOriginalDeleted,
        SwapStep::OriginalsDeleted,
        SwapStep::FirstInstalled,
        SwapStep::Installed,
    ];
    for step in steps {
        for clean_reopen in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let mut log = open_log(d.path(), compact_config());
            let mut model = Model::new();
            populate(&mut log, &mut model);
            log.flush().unwrap();
            let plan = log.plan_cleaning(1_000).unwrap();
            let end = plan.dirty_end;
            let cleaned = build_cleaned(&plan, 1 << 20).unwrap();
            assert!(cleaned.segments.len() >= 2);
            let stats = log.swap_cleaned_until(cleaned, Some(step)).unwrap();
            assert!(!stats.swapped);
            drop(log); // crash

            let log = Log::open(
                d.path().to_path_buf(),
                compact_config(),
                Recovery {
                    clean_shutdown: clean_reopen,
                    recovery_point: if clean_reopen { i64::MAX } else { 0 },
                    log_start_offset: None,
                    ..Recovery::default()
                },
            )
            .unwrap();
            let want = if step >= SwapStep::Committed {
                compacted(&model, end, 0)
            } else {
                all(&model)
            };
            assert_eq!(read_records(&log), want, "step {step:?}");
            assert_eq!(log.log_end_offset(), model.last().unwrap().0 + 1);
            for sfx in [".cleaned", ".swap", ".deleted"] {
                assert!(
                    files_with_suffix(d.path(), sfx).is_empty(),
                    "{step:?} {sfx}"
                );
            }
            // Compacting again converges to the same result.
            let mut log = log;
            if let Some((stats, end2)) = clean_once(&mut log, 1_000, 1 << 20) {
                assert_eq!(end2, end);
                assert!(stats.swapped);
            }
            assert_eq!(
                read_records(&log),
                compacted(&model, end, 0),
                "step {step:?}"
            );
        }
    }
}

/// Appends a control batch (a stand-in abort marker) and returns its offset.
fn marker(log: &mut Log) -> i64 {
    let mut b = simple(1, 100, 80);
    b[21..23].copy_from_slice(&0x30i16.to_be_bytes());
    batch::write_crc(&mut b);
    log.append_as_leader(&b, 0, 0).unwrap().first_offset
}

#[test]
fn cleaner_keeps_the_transaction_index_with_its_segment() {
    let d = tempfile::tempdir().unwrap();
    let mut log = open_log(d.path(), compact_config());
    let mut model = Model::new();
    let txn = |producer_id, first_offset, last_offset| AbortedTxn {
        producer_id,
        first_offset,
        last_offset,
        last_stable_offset: last_offset + 1,
    };
    // Segment A: two superseded values, then producer 7's abort marker.
    put(&mut log, &mut model, 100, &[(Some("k0"), Some("a"))]);
    put(&mut log, &mut model, 100, &[(Some("k1"), Some("a"))]);
    let t0 = txn(7, 0, marker(&mut log));
    log.append_aborted_txn(t0).unwrap();
    log.roll(0).unwrap();
    // Segment B: producer 8's transaction starts here.
    let b_base = log.log_end_offset();
    put(&mut log, &mut model, 100, &[(Some("k0"), Some("b"))]);
    log.roll(0).unwrap();
    // Segment C: a superseded value, then producer 8's abort marker.
    let c_base = log.log_end_offset();
    put(&mut log, &mut model, 100, &[(Some("k2"), Some("x"))]);
    put(&mut log, &mut model, 100, &[(Some("k2"), Some("y"))]);
    let t2 = txn(8, b_base, marker(&mut log));
    log.append_aborted_txn(t2).unwrap();
    log.roll(0).unwrap();
    put(&mut log, &mut model, 100, &[(Some("k1"), Some("d"))]);

    let entries = |log: &Log| -> Vec<(i64, AbortedTxn)> {
        log.segments()
            .iter()
            .flat_map(|s| s.txn_index().entries().map(move |t| (s.base_offset(), t)))
            .collect()
    };
    let want = vec![(0, t0), (c_base, t2)];
    assert_eq!(entries(&log), want);
    log.flush().unwrap();

    // A crash right after the commit point installs the cleaned copies.
    let plan = log.plan_cleaning(1_000).unwrap();
    let cleaned = build_cleaned(&plan, 1 << 20).unwrap();
    let replaced: Vec<i64> = cleaned.segments.iter().map(|c| c.base_offset).collect();
    assert_eq!(replaced, vec![0, c_base]);
    assert!(segment::segment_file(d.path(), c_base, ".txnindex.cleaned").exists());
    log.swap_cleaned_until(cleaned, Some(SwapStep::Committed))
        .unwrap();
    drop(log);
    let mut log = open_log(d.path(), compact_config());
    assert_eq!(
        read_records(&log),
        compacted(&model, log.log_end_offset() - 1, 0)
    );
    assert_eq!(entries(&log), want);
    assert!(files_with_suffix(d.path(), ".swap").is_empty());
    assert_eq!(log.collect_aborted_txns(b_base, b_base + 1), vec![t2]);

    // A later clean (now k0 = "b" in segment B is superseded) and a clean
    // reopen keep them too.
    put(&mut log, &mut model, 100, &[(Some("k0"), Some("e"))]);
    log.roll(0).unwrap();
    let active_base = log.log_end_offset();
    put(&mut log, &mut model, 100, &[(Some("k3"), Some("z"))]);
    let (stats, end) = clean_once(&mut log, 1_000, 1 << 20).unwrap();
    assert!(stats.swapped && stats.records_removed >= 1);
    assert_eq!(end, active_base);
    assert_eq!(read_records(&log), compacted(&model, active_base, 0));
    assert_eq!(entries(&log), want);
    log.close().unwrap();
    let log = Log::open(
        d.path().to_path_buf(),
        compact_config(),
        Recovery {
            clean_shutdown: true,
            recovery_point: i64::MAX,
            log_start_offset: None,
            ..Recovery::default()
        },
    )
    .unwrap();
    assert_eq!(entries(&log), want);
}
