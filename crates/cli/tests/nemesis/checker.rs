//! The checker of a nemesis run: given what the clients were told (acknowledgements of an
//! idempotent producer, the outcomes of transactions) and what consumers read (during the
//! run and once at the end), it lists every violation of Kafka's guarantees:
//!
//! - **lost**: an acknowledged record (or a record of a committed transaction) missing from
//!   the final read, or found at another offset than the one acknowledged;
//! - **duplicated**: a record present twice;
//! - **reordered**: a producer's records of one partition out of the order it sent them;
//! - **aborted read**: a record of an aborted transaction seen by a read_committed consumer;
//!   **partial transaction**: some but not all records of a transaction whose outcome the
//!   producer never learnt;
//! - **non-monotonic offsets**: a consumer that got offsets of a partition out of order;
//! - **phantom / vanished reads**: a record read that no producer wrote, or one read during
//!   the run that is not at that offset at the end (it was read above the high watermark).
//!
//! Pure: histories in, a report out, so it is tested on histories made to fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Idempotent records are `i-<partition>-<seq>`; transactional ones `t-<txn>-<k>`.
pub fn idempotent_value(partition: i32, seq: u64) -> String {
    format!("i-{partition}-{seq:010}")
}

pub fn txn_value(txn: u64, k: usize) -> String {
    format!("t-{txn:08}-{k:03}")
}

/// What the idempotent producer was told of one record.
#[derive(Debug, Clone)]
pub struct Ack {
    pub partition: i32,
    pub value: String,
    /// The offset acknowledged, or the delivery error.
    pub outcome: Result<i64, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    Committed,
    Aborted,
    /// The producer could not tell (its commit failed without a definite answer).
    Unknown,
}

/// One transaction: its records (partition, value) in the order sent, and how it ended.
#[derive(Debug, Clone)]
pub struct Txn {
    pub records: Vec<(i32, String)>,
    pub outcome: TxnOutcome,
}

/// One record a consumer got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// Everything a run recorded.
#[derive(Debug, Default)]
pub struct History {
    pub idempotent_topic: String,
    pub txn_topic: String,
    pub acks: Vec<Ack>,
    pub txns: Vec<Txn>,
    /// What a read_committed consumer got while faults happened, in arrival order.
    pub live_reads: Vec<Read>,
    /// A read_committed read of everything after the cluster healed.
    pub final_reads: Vec<Read>,
}

/// The violations found, by kind (each entry says where).
#[derive(Debug, Default)]
pub struct Report {
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub reordered: Vec<String>,
    pub aborted_reads: Vec<String>,
    pub partial_txns: Vec<String>,
    pub non_monotonic: Vec<String>,
    pub phantom_or_vanished: Vec<String>,
    /// Counts for the summary.
    pub acknowledged: usize,
    pub committed_txns: usize,
    pub aborted_txns: usize,
    pub unknown_txns: usize,
    pub read: usize,
}

impl Report {
    /// Every violation as (kind, count, first few).
    pub fn violations(&self) -> Vec<(&'static str, usize, Vec<String>)> {
        [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("reordered", &self.reordered),
            ("aborted read", &self.aborted_reads),
            ("partial transaction", &self.partial_txns),
            ("non-monotonic offsets", &self.non_monotonic),
            ("phantom or vanished read", &self.phantom_or_vanished),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(kind, v)| (kind, v.len(), v.iter().take(5).cloned().collect()))
        .collect()
    }

    pub fn is_ok(&self) -> bool {
        self.violations().is_empty()
    }
}

/// Checks `history`.
pub fn check(history: &History) -> Report {
    let mut report = Report {
        read: history.final_reads.len(),
        ..Report::default()
    };
    monotonic(&history.final_reads, "the final read", &mut report);
    monotonic(&history.live_reads, "the live consumer", &mut report);
    let at: HashMap<(&str, i32, i64), &str> = history
        .final_reads
        .iter()
        .map(|r| ((r.topic.as_str(), r.partition, r.offset), r.value.as_str()))
        .collect();
    check_idempotent(history, &at, &mut report);
    check_txns(history, &mut report);
    for r in &history.live_reads {
        match at.get(&(r.topic.as_str(), r.partition, r.offset)) {
            Some(v) if *v == r.value => {}
            found => report.phantom_or_vanished.push(format!(
                "{}-{} offset {}: read {} during the run, {:?} at the end",
                r.topic, r.partition, r.offset, r.value, found
            )),
        }
    }
    report
}

/// Offsets of each partition strictly increasing in the order `reads` came.
fn monotonic(reads: &[Read], who: &str, report: &mut Report) {
    let mut last: HashMap<(&str, i32), i64> = HashMap::new();
    for r in reads {
        let key = (r.topic.as_str(), r.partition);
        if let Some(&before) = last.get(&key) {
            if r.offset <= before {
                report.non_monotonic.push(format!(
                    "{who}: {}-{} offset {} after {before}",
                    r.topic, r.partition, r.offset
                ));
            }
        }
        last.insert(key, r.offset);
    }
}

fn check_idempotent(history: &History, at: &HashMap<(&str, i32, i64), &str>, report: &mut Report) {
    let topic = history.idempotent_topic.as_str();
    let mut found: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    let mut by_partition: BTreeMap<i32, Vec<&Read>> = BTreeMap::new();
    for r in history.final_reads.iter().filter(|r| r.topic == topic) {
        found
            .entry(r.value.as_str())
            .or_default()
            .push((r.partition, r.offset));
        by_partition.entry(r.partition).or_default().push(r);
    }
    let written: BTreeSet<&str> = history.acks.iter().map(|a| a.value.as_str()).collect();
    for (value, places) in &found {
        if places.len() > 1 {
            report
                .duplicated
                .push(format!("{value} at {places:?} in {topic}"));
        }
        if !written.contains(value) {
            report
                .phantom_or_vanished
                .push(format!("{value} in {topic} was never sent"));
        }
    }
    for (partition, reads) in &by_partition {
        let mut last: Option<&str> = None;
        for r in reads {
            if !r.value.starts_with(&format!("i-{partition}-")) {
                report.reordered.push(format!(
                    "{} found in partition {partition} of {topic}",
                    r.value
                ));
                continue;
            }
            if let Some(before) = last.filter(|b| r.value.as_str() < *b) {
                report.reordered.push(format!(
                    "{topic}-{partition} offset {}: {} after {before}",
                    r.offset, r.value
                ));
            }
            last = Some(r.value.as_str());
        }
    }
    for a in &history.acks {
        let Ok(offset) = a.outcome else { continue };
        report.acknowledged += 1;
        match at.get(&(topic, a.partition, offset)) {
            Some(v) if *v == a.value => {}
            other => report.lost.push(format!(
                "{} acknowledged at {topic}-{} offset {offset}, found {:?} there (and at {:?})",
                a.value,
                a.partition,
                other,
                found.get(a.value.as_str())
            )),
        }
    }
}

fn check_txns(history: &History, report: &mut Report) {
    let topic = history.txn_topic.as_str();
    let mut found: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    for r in history.final_reads.iter().filter(|r| r.topic == topic) {
        found
            .entry(r.value.as_str())
            .or_default()
            .push((r.partition, r.offset));
    }
    let mut outcome_of: HashMap<&str, TxnOutcome> = HashMap::new();
    for txn in &history.txns {
        match txn.outcome {
            TxnOutcome::Committed => report.committed_txns += 1,
            TxnOutcome::Aborted => report.aborted_txns += 1,
            TxnOutcome::Unknown => report.unknown_txns += 1,
        }
        let mut present = 0;
        let mut offsets_by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (partition, value) in &txn.records {
            outcome_of.insert(value.as_str(), txn.outcome);
            match found.get(value.as_str()).map(Vec::as_slice) {
                None | Some([]) => {}
                Some([(p, offset)]) if p == partition => {
                    present += 1;
                    offsets_by_partition.entry(*p).or_default().push(*offset);
                }
                Some(places) => {
                    present += 1;
                    report
                        .duplicated
                        .push(format!("{value} at {places:?} in {topic}"));
                }
            }
        }
        for (partition, offsets) in offsets_by_partition {
            if offsets.windows(2).any(|w| w[1] <= w[0]) {
                report.reordered.push(format!(
                    "a transaction's records in {topic}-{partition} at {offsets:?}"
                ));
            }
        }
        let n = txn.records.len();
        let first = txn.records.first().map(|(_, v)| v.as_str()).unwrap_or("");
        match txn.outcome {
            TxnOutcome::Committed if present < n => report.lost.push(format!(
                "committed transaction {first}..: {present} of {n} records"
            )),
            TxnOutcome::Aborted if present > 0 => report.aborted_reads.push(format!(
                "aborted transaction {first}..: {present} of {n} records read"
            )),
            TxnOutcome::Unknown if present > 0 && present < n => report.partial_txns.push(format!(
                "transaction {first}.. of unknown outcome: {present} of {n} records"
            )),
            _ => {}
        }
    }
    for value in found.keys() {
        if !outcome_of.contains_key(value) {
            report
                .phantom_or_vanished
                .push(format!("{value} in {topic} was never sent"));
        }
    }
    for r in history.live_reads.iter().filter(|r| r.topic == topic) {
        if outcome_of.get(r.value.as_str()) == Some(&TxnOutcome::Aborted) {
            report.aborted_reads.push(format!(
                "the live consumer read {} of an aborted transaction",
                r.value
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(topic: &str, partition: i32, offset: i64, value: &str) -> Read {
        Read {
            topic: topic.into(),
            partition,
            offset,
            value: value.into(),
        }
    }

    /// A clean history: 3 acknowledged records on partition 0 (one failed delivery that
    /// never landed), a committed and an aborted transaction, all read as they should be.
    fn clean() -> History {
        let i = |seq| idempotent_value(0, seq);
        let ack = |seq, outcome| Ack {
            partition: 0,
            value: i(seq),
            outcome,
        };
        History {
            idempotent_topic: "i".into(),
            txn_topic: "t".into(),
            acks: vec![
                ack(0, Ok(0)),
                ack(1, Ok(1)),
                ack(2, Err("timed out".into())),
                ack(3, Ok(2)),
            ],
            txns: vec![
                Txn {
                    records: vec![(0, txn_value(0, 0)), (1, txn_value(0, 1))],
                    outcome: TxnOutcome::Committed,
                },
                Txn {
                    records: vec![(0, txn_value(1, 0))],
                    outcome: TxnOutcome::Aborted,
                },
                Txn {
                    records: vec![(1, txn_value(2, 0)), (1, txn_value(2, 1))],
                    outcome: TxnOutcome::Unknown,
                },
            ],
            live_reads: vec![read("i", 0, 0, &i(0)), read("i", 0, 1, &i(1))],
            final_reads: vec![
                read("i", 0, 0, &i(0)),
                read("i", 0, 1, &i(1)),
                read("i", 0, 2, &i(3)),
                read("t", 0, 0, &txn_value(0, 0)),
                read("t", 1, 0, &txn_value(0, 1)),
                read("t", 1, 3, &txn_value(2, 0)),
                read("t", 1, 4, &txn_value(2, 1)),
            ],
        }
    }

    fn kinds(h: &History) -> Vec<&'static str> {
        check(h)
            .violations()
            .into_iter()
            .map(|(k, _, _)| k)
            .collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let report = check(&clean());
        assert!(report.is_ok(), "{:?}", report.violations());
        assert_eq!(report.acknowledged, 3);
        assert_eq!(
            (
                report.committed_txns,
                report.aborted_txns,
                report.unknown_txns
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn every_kind_of_violation_is_caught() {
        // An acknowledged record missing.
        let mut h = clean();
        h.final_reads.remove(2);
        assert_eq!(kinds(&h), vec!["lost"]);
        // Acknowledged at one offset, found at another.
        let mut h = clean();
        h.final_reads[2].offset = 7;
        assert_eq!(kinds(&h), vec!["lost"]);
        // Twice.
        let mut h = clean();
        let again = h.final_reads[1].clone();
        h.final_reads.insert(3, Read { offset: 3, ..again });
        assert!(kinds(&h).contains(&"duplicated"));
        // Out of order.
        let mut h = clean();
        h.final_reads[0].value = idempotent_value(0, 1);
        h.final_reads[1].value = idempotent_value(0, 0);
        assert!(kinds(&h).contains(&"reordered"));
        // A committed transaction partly missing.
        let mut h = clean();
        h.final_reads.retain(|r| r.value != txn_value(0, 1));
        assert_eq!(kinds(&h), vec!["lost"]);
        // An aborted transaction visible.
        let mut h = clean();
        h.final_reads.push(read("t", 0, 1, &txn_value(1, 0)));
        assert_eq!(kinds(&h), vec!["aborted read"]);
        let mut h = clean();
        h.live_reads.push(read("t", 0, 1, &txn_value(1, 0)));
        assert!(kinds(&h).contains(&"aborted read"));
        // Half of a transaction of unknown outcome.
        let mut h = clean();
        h.final_reads.pop();
        assert_eq!(kinds(&h), vec!["partial transaction"]);
        // Offsets going back.
        let mut h = clean();
        h.live_reads.push(read("i", 0, 0, &idempotent_value(0, 0)));
        assert_eq!(kinds(&h), vec!["non-monotonic offsets"]);
        // Read during the run, gone at the end (it was above the HW).
        let mut h = clean();
        h.live_reads.push(read("i", 0, 5, &idempotent_value(0, 9)));
        assert_eq!(kinds(&h), vec!["phantom or vanished read"]);
        // Never written.
        let mut h = clean();
        h.final_reads.push(read("t", 1, 9, "t-99999999-000"));
        assert_eq!(kinds(&h), vec!["phantom or vanished read"]);
    }
}
