//! The Raft log and vote of one voter, on disk.
//!
//! Files under the quorum directory:
//! - `raft-log`: entries as frames `length u32 BE, crc32c u32 BE, JSON entry`, in index
//!   order. Appends are fsynced before the library is told they are stored. On open, frames
//!   are read until the first torn or corrupt one and the file is cut there (such a frame
//!   was never acknowledged). Truncation (a conflicting suffix) and purging (entries a
//!   snapshot covers) rewrite the file through a temporary file and a rename; both are rare
//!   and the log is short, since it is purged at every snapshot.
//! - `raft-vote.json`: the vote, replaced atomically (temporary file, fsync, rename,
//!   directory fsync) before the library is told it is saved.
//! - `raft-committed.json`, `raft-purged.json`: the last committed and the last purged
//!   log id, replaced the same way.
//!
//! The I/O is synchronous under an async mutex: metadata entries are small and rare.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogId, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

use super::{NodeId, TypeConfig};

const LOG_FILE: &str = "raft-log";
const VOTE_FILE: &str = "raft-vote.json";
const COMMITTED_FILE: &str = "raft-committed.json";
const PURGED_FILE: &str = "raft-purged.json";
/// One entry larger than this is corrupt, not real.
const FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The log store handed to the Raft node (cheap to clone: the reader shares it).
#[derive(Clone)]
pub struct FileLogStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

impl FileLogStore {
    /// Opens (or creates) the log in `dir`, dropping a torn tail.
    pub fn open(dir: &Path) -> io::Result<FileLogStore> {
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut entries = BTreeMap::new();
        let mut valid = 0usize;
        while let Some((entry, len)) = parse_frame(&bytes[valid..]) {
            let entry: Entry<TypeConfig> = entry;
            entries.insert(entry.get_log_id().index, entry);
            valid += len;
        }
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), dropped_bytes = bytes.len() - valid, "raft log had a torn tail; truncating it");
            file.set_len(valid as u64)?;
            file.sync_all()?;
        }
        Ok(FileLogStore {
            inner: Arc::new(Mutex::new(Inner {
                vote: read_json(&dir.join(VOTE_FILE))?,
                committed: read_json(&dir.join(COMMITTED_FILE))?,
                purged: read_json(&dir.join(PURGED_FILE))?,
                dir: dir.to_path_buf(),
                file,
                entries,
            })),
        })
    }
}

impl Inner {
    /// Rewrites the log file from the entries in memory (after a truncation or purge).
    fn rewrite(&mut self) -> io::Result<()> {
        let path = self.dir.join(LOG_FILE);
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut out = File::create(&tmp)?;
        for entry in self.entries.values() {
            out.write_all(&frame(entry))?;
        }
        out.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for FileLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for FileLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        write_json(&inner.dir, VOTE_FILE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        write_json(&inner.dir, COMMITTED_FILE, &committed)
            .map_err(|e| StorageIOError::write(&e))?;
        inner.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut inner = self.inner.lock().await;
        let mut bytes = Vec::new();
        let mut appended = Vec::new();
        let mut expected = inner
            .entries
            .keys()
            .next_back()
            .map(|i| i + 1)
            .or(inner.purged.map(|p| p.index + 1));
        for entry in entries {
            let index = entry.get_log_id().index;
            if let Some(expected) = expected {
                assert_eq!(index, expected, "raft entries are appended contiguously");
            }
            expected = Some(index + 1);
            bytes.extend_from_slice(&frame(&entry));
            appended.push(entry);
        }
        let written = inner
            .file
            .write_all(&bytes)
            .and_then(|()| inner.file.sync_data());
        match written {
            Ok(()) => {
                for entry in appended {
                    inner.entries.insert(entry.get_log_id().index, entry);
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let cut: Vec<u64> = inner
            .entries
            .range(log_id.index..)
            .map(|(i, _)| *i)
            .collect();
        for index in cut {
            inner.entries.remove(&index);
        }
        inner
            .rewrite()
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        assert!(
            inner.purged.as_ref() <= Some(&log_id),
            "purging never goes back"
        );
        write_json(&inner.dir, PURGED_FILE, &Some(log_id))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner.purged = Some(log_id);
        let gone: Vec<u64> = inner
            .entries
            .range(..=log_id.index)
            .map(|(i, _)| *i)
            .collect();
        for index in gone {
            inner.entries.remove(&index);
        }
        inner
            .rewrite()
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

fn frame(entry: &Entry<TypeConfig>) -> Vec<u8> {
    let payload = serde_json::to_vec(entry).expect("raft entries serialize");
    crate::frame::encode(&payload, FRAME_BYTES_MAX)
}

/// One complete, CRC-valid, decodable frame at the start of `buf`, and its length.
fn parse_frame<T: DeserializeOwned>(buf: &[u8]) -> Option<(T, usize)> {
    let (payload, len) = crate::frame::parse(buf, FRAME_BYTES_MAX)?;
    Some((serde_json::from_slice(payload).ok()?, len))
}

/// The JSON value stored in `path`, `None` if the file does not exist.
pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `dir/name` with `value` durably: temporary file, fsync, rename, directory fsync.
pub(super) fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).expect("serializes"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
