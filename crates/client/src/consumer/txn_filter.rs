//! read_committed filtering: which fetched batches hold data of aborted transactions. The
//! broker bounds a read_committed fetch by the last stable offset and lists the aborted
//! transactions in range (producer id, first offset); a producer's batches from its first
//! offset up to its abort marker are dropped. Control batches are never returned at all.

use std::collections::HashSet;

use bytes::Buf;
use kafka_protocol::messages::fetch_response::AbortedTransaction;
use kafka_protocol::records::Record;

/// Control record type of an abort marker (the key is `version: i16, type: i16`).
const ABORT_MARKER: i16 = 0;

/// What the filter needs to know about one fetched batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchInfo {
    pub producer_id: i64,
    pub last_offset: i64,
    pub transactional: bool,
    pub control: bool,
    /// For a control batch: whether it is an abort marker (else a commit marker).
    pub abort_marker: bool,
}

impl BatchInfo {
    /// The batch facts from its decoded records (`None` for a batch with no records left).
    pub fn from_records(records: &[Record]) -> Option<BatchInfo> {
        let first = records.first()?;
        let last = records.last()?;
        let abort_marker = first.control
            && first
                .key
                .as_ref()
                .filter(|k| k.len() >= 4)
                .is_some_and(|k| (&k[2..4]).get_i16() == ABORT_MARKER);
        Some(BatchInfo {
            producer_id: first.producer_id,
            last_offset: last.offset,
            transactional: first.transactional,
            control: first.control,
            abort_marker,
        })
    }
}

/// The aborted-transaction state of one partition's fetch response, consulted batch by
/// batch in offset order.
#[derive(Debug, Default)]
pub(super) struct AbortedFilter {
    /// Aborted transactions not reached yet, by first offset descending (pop the smallest).
    upcoming: Vec<(i64, i64)>,
    /// Producers whose aborted transaction is in progress at the current batch.
    aborting: HashSet<i64>,
}

impl AbortedFilter {
    pub fn new(aborted: &[AbortedTransaction]) -> AbortedFilter {
        let mut upcoming: Vec<(i64, i64)> = aborted
            .iter()
            .map(|a| (a.first_offset, a.producer_id.0))
            .collect();
        upcoming.sort_unstable_by(|a, b| b.cmp(a));
        AbortedFilter {
            upcoming,
            aborting: HashSet::new(),
        }
    }

    /// Whether the records of `batch` go to the application. Control batches never do; an
    /// abort marker ends its producer's aborted transaction.
    pub fn keep(&mut self, batch: &BatchInfo) -> bool {
        if batch.transactional || batch.control {
            // Transactions beginning at or before this batch are in progress now. Markers
            // count too: an aborted transaction with no data here begins at its marker.
            while let Some(&(first, producer)) = self.upcoming.last() {
                if first > batch.last_offset {
                    break;
                }
                self.upcoming.pop();
                self.aborting.insert(producer);
            }
        }
        if batch.control {
            if batch.abort_marker {
                self.aborting.remove(&batch.producer_id);
            }
            return false;
        }
        !batch.transactional || !self.aborting.contains(&batch.producer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ProducerId;

    fn data(producer_id: i64, last_offset: i64, transactional: bool) -> BatchInfo {
        BatchInfo {
            producer_id,
            last_offset,
            transactional,
            control: false,
            abort_marker: false,
        }
    }

    fn marker(producer_id: i64, last_offset: i64, abort: bool) -> BatchInfo {
        BatchInfo {
            control: true,
            abort_marker: abort,
            ..data(producer_id, last_offset, true)
        }
    }

    fn aborted(producer_id: i64, first_offset: i64) -> AbortedTransaction {
        AbortedTransaction::default()
            .with_producer_id(ProducerId(producer_id))
            .with_first_offset(first_offset)
    }

    #[test]
    fn aborted_data_is_dropped_until_its_abort_marker() {
        // Offsets: 0-1 p7 (aborted), 2-3 p8 (committed), 4 p7 abort, 5 p8 commit,
        // 6 plain, 7 p7 again (a later transaction, committed).
        let mut f = AbortedFilter::new(&[aborted(7, 0)]);
        assert!(!f.keep(&data(7, 1, true)));
        assert!(
            f.keep(&data(8, 3, true)),
            "interleaved committed data stays"
        );
        assert!(!f.keep(&marker(7, 4, true)), "markers are never returned");
        assert!(!f.keep(&marker(8, 5, false)));
        assert!(f.keep(&data(-1, 6, false)));
        assert!(
            f.keep(&data(7, 7, true)),
            "after its abort marker p7 is visible again"
        );
    }

    #[test]
    fn an_aborted_transaction_starting_inside_a_batch_range_is_caught() {
        // The fetch starts in the middle of p3's aborted transaction (first offset 10,
        // before the fetch offset); two aborted transactions of p3 in one response.
        let mut f = AbortedFilter::new(&[aborted(3, 30), aborted(3, 10)]);
        assert!(!f.keep(&data(3, 20, true)));
        assert!(!f.keep(&marker(3, 21, true)));
        assert!(
            f.keep(&data(3, 25, true)),
            "committed transaction between the two"
        );
        assert!(!f.keep(&marker(3, 26, false)));
        assert!(!f.keep(&data(3, 31, true)));
    }

    #[test]
    fn an_aborted_transaction_without_data_here_ends_at_its_marker() {
        // The broker lists it with its marker's offset as the first offset; the producer's
        // next (committed) transaction must stay visible.
        let mut f = AbortedFilter::new(&[aborted(4, 0)]);
        assert!(!f.keep(&marker(4, 0, true)));
        assert!(f.keep(&data(4, 1, true)));
        assert!(!f.keep(&marker(4, 2, false)));
    }

    #[test]
    fn without_aborted_transactions_only_control_batches_are_dropped() {
        let mut f = AbortedFilter::new(&[]);
        assert!(f.keep(&data(5, 0, true)));
        assert!(!f.keep(&marker(5, 1, false)));
        assert!(f.keep(&data(-1, 2, false)));
    }
}
