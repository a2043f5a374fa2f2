//! Gregor's storage layer: Kafka-style segmented partition logs.
//!
//! This crate exists so that the broker can persist and serve record batches
//! exactly the way Apache Kafka lays them out on disk, without knowing
//! anything about the Kafka wire protocol beyond the v2 record-batch format.
//!
//! * [`batch`] parses and patches v2 record-batch headers.
//! * [`index`] / [`time_index`] are the sparse per-segment indexes.
//! * [`txn_index`] is the per-segment index of aborted transactions.
//! * [`segment`] is one `.log` file plus its three indexes.
//! * [`log`] is a whole partition log (a directory of segments) with
//!   recovery, reads, rolling, truncation and the leader-epoch cache.
//! * [`log`] also applies retention and DeleteRecords (whole segments are
//!   deleted) and runs the cheap, locked phases of compaction.
//! * [`cleaner`] is the heavy phase of compaction, run without the lock;
//!   [`records`] decodes the records it needs to look at.
//! * [`clock`] is the one injected source of wall-clock time.
//! * [`file_records`] is a read left in its segment file, for zero-copy sends.
//! * [`open_files`] is the budget of open segment files all logs share.
//! * [`log_dir`] manages one `log.dirs` entry: clean-shutdown marker and the
//!   recovery-point / log-start-offset checkpoint files.

pub mod batch;
mod checkpoint;
pub mod cleaner;
pub mod clock;
pub mod config;
pub mod epoch;
pub mod error;
pub mod file_records;
pub mod flush_stats;
pub mod index;
pub mod log;
pub mod log_dir;
pub mod open_files;
pub mod records;
pub mod segment;
pub mod time_index;
pub mod txn_index;

pub use batch::{BatchHeader, BatchIter, HEADER_SIZE};
pub use cleaner::{build_cleaned, CleanPlan, CleanStats, CleanedSegment, CleanedSegments};
pub use config::{LogConfig, TimestampType};
pub use epoch::{EpochEntry, LeaderEpochCache};
pub use error::StorageError;
pub use file_records::{FetchedRecords, FileRecords};
pub use log::{AppendInfo, Log, ReadResult, Recovery, RetentionOutcome};
pub use log_dir::LogDir;
pub use open_files::OpenFiles;
pub use segment::LogSegment;
pub use txn_index::AbortedTxn;
