//! Record batches a read found in a segment file, left in the file.
//!
//! Exists for zero-copy fetches: the broker sends `[position, position + len)` of the file
//! straight to the socket (`sendfile`), so served bytes never pass through user memory.
//! The slice holds the file open (`Arc<File>`): a segment renamed `.deleted` by retention, or
//! closed by the open-file budget, while the transfer runs is still read whole. Bytes below
//! the high watermark never change in place; a replica truncated during a transfer leaves the
//! file shorter than the slice, which the sender detects (and then closes the connection, as
//! Kafka does).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

/// Whole batches at `[position, position + len)` of a segment file.
#[derive(Clone, Debug)]
pub struct FileRecords {
    file: Arc<File>,
    position: u64,
    len: usize,
    /// One past the last offset of the last batch.
    next_offset: i64,
}

impl FileRecords {
    pub(crate) fn new(file: Arc<File>, position: u64, len: usize, next_offset: i64) -> Self {
        assert!(len > 0, "an empty read is no file slice");
        FileRecords {
            file,
            position,
            len,
            next_offset,
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Byte position of the first batch in the file.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the last offset in the slice.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The bytes, copied into memory (the copy path: small slices, tests).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        let mut v = vec![0u8; self.len];
        self.file.read_exact_at(&mut v, self.position)?;
        Ok(Bytes::from(v))
    }
}

/// What a fetch read returned: bytes in memory, or a slice of a segment file.
#[derive(Clone, Debug)]
pub enum FetchedRecords {
    Memory(Bytes),
    File(FileRecords),
}

impl FetchedRecords {
    pub fn len(&self) -> usize {
        match self {
            FetchedRecords::Memory(b) => b.len(),
            FetchedRecords::File(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in memory (a file slice is read).
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        match self {
            FetchedRecords::Memory(b) => Ok(b.clone()),
            FetchedRecords::File(f) => f.to_bytes(),
        }
    }
}
