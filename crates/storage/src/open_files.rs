//! A budget of open segment files shared by every log of a broker.
//!
//! Exists because a broker hosts more segment files than a process may hold descriptors
//! (100,000 partitions, several segments each, under a limit of 20,000): each segment's
//! `.log` file is opened when first used and closed again when the budget is reached and it
//! is the least recently used (a CLOCK sweep: every use marks the file, the sweep spares a
//! marked file once). Files in use stay open: a reader holds an `Arc<File>` that outlives
//! its eviction, so a read or a transfer in flight is never cut off, and the budget can be
//! exceeded by what is being read at the moment.
//!
//! A reopened file must be the one first opened (same device and inode): a segment whose
//! path now names another file (a cleaner swap half done) answers an I/O error, never the
//! other file's bytes.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Fewest files a budget allows (below it every read would reopen).
pub const MIN_OPEN_FILES: usize = 16;

/// The budget of a log opened without one given (tests, tools).
pub const DEFAULT_OPEN_FILES: usize = 1024;

/// The shared budget; cheap to clone.
#[derive(Clone)]
pub struct OpenFiles {
    inner: Arc<Budget>,
}

struct Budget {
    max: usize,
    /// Files open now (held by the budget).
    open: AtomicUsize,
    /// Opens since start (first opens and reopens), for tests and metrics.
    opens: AtomicU64,
    /// Open files in sweep order.
    ring: Mutex<VecDeque<Weak<Slot>>>,
}

/// One segment file's place in the budget.
struct Slot {
    file: Mutex<Option<Arc<File>>>,
    /// Used since the sweep last passed.
    used: AtomicBool,
    budget: Weak<Budget>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let held = self.file.get_mut().map(|f| f.is_some()).unwrap_or(false);
        if let (true, Some(budget)) = (held, self.budget.upgrade()) {
            budget.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for OpenFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFiles")
            .field("max", &self.max())
            .field("open", &self.open_now())
            .finish()
    }
}

impl OpenFiles {
    /// A budget of `max` open files (at least [`MIN_OPEN_FILES`]).
    pub fn new(max: usize) -> OpenFiles {
        OpenFiles {
            inner: Arc::new(Budget {
                max: max.max(MIN_OPEN_FILES),
                open: AtomicUsize::new(0),
                opens: AtomicU64::new(0),
                ring: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The budget's size.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Files the budget holds open now.
    pub fn open_now(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Files opened since start (first opens and reopens).
    pub fn opens(&self) -> u64 {
        self.inner.opens.load(Ordering::Relaxed)
    }

    /// Opens `path` (read and write; `create` makes it empty, creating it if needed) as a
    /// file of this budget.
    pub(crate) fn open(&self, path: &Path, create: bool) -> io::Result<SegmentFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if create {
            options.create(true).truncate(true);
        }
        let file = options.open(path)?;
        let meta = file.metadata()?;
        let slot = Arc::new(Slot {
            file: Mutex::new(None),
            used: AtomicBool::new(true),
            budget: Arc::downgrade(&self.inner),
        });
        let seg = SegmentFile {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            slot,
            budget: self.clone(),
        };
        self.inner.opens.fetch_add(1, Ordering::Relaxed);
        *seg.slot.file.lock().expect("slot lock") = Some(Arc::new(file));
        self.admit(&seg.slot);
        Ok(seg)
    }

    /// Counts a file just opened for `slot` and puts it at the end of the ring, first
    /// closing the least recently used files while the budget is full.
    fn admit(&self, slot: &Arc<Slot>) {
        let b = &self.inner;
        let mut ring = b.ring.lock().expect("ring lock");
        // A full sweep gives every file its second chance once; files in use at the moment
        // (their slot locked) are passed over, so the loop is bounded.
        let mut budget_left = 2 * ring.len();
        while b.open.load(Ordering::Relaxed) >= b.max && budget_left > 0 {
            budget_left -= 1;
            let Some(weak) = ring.pop_front() else { break };
            let Some(victim) = weak.upgrade() else {
                continue;
            };
            if victim.used.swap(false, Ordering::Relaxed) {
                ring.push_back(weak);
                continue;
            }
            let Ok(mut file) = victim.file.try_lock() else {
                ring.push_back(weak);
                continue;
            };
            if file.take().is_some() {
                b.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        b.open.fetch_add(1, Ordering::Relaxed);
        ring.push_back(Arc::downgrade(slot));
        // Segments dropped while open leave dead entries; drop them before they pile up.
        if ring.len() > 2 * b.open.load(Ordering::Relaxed) + 64 {
            ring.retain(|w| w.strong_count() > 0);
        }
    }
}

/// A segment's `.log` file: open while recently used, reopened when needed.
pub(crate) struct SegmentFile {
    path: PathBuf,
    /// (device, inode) of the file first opened.
    identity: (u64, u64),
    slot: Arc<Slot>,
    budget: OpenFiles,
}

impl SegmentFile {
    /// The open file (reopened if the budget closed it).
    pub(crate) fn get(&self) -> io::Result<Arc<File>> {
        let mut held = self.slot.file.lock().expect("slot lock");
        self.slot.used.store(true, Ordering::Relaxed);
        if let Some(f) = held.as_ref() {
            return Ok(f.clone());
        }
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != self.identity {
            return Err(io::Error::other(format!(
                "segment file {} was replaced by another file",
                self.path.display()
            )));
        }
        let file = Arc::new(file);
        *held = Some(file.clone());
        self.budget.inner.opens.fetch_add(1, Ordering::Relaxed);
        self.budget.admit(&self.slot);
        Ok(file)
    }

    /// Closes the file now (its descriptor goes once no reader holds it).
    #[cfg(test)]
    pub(crate) fn close(&self) {
        if self.slot.file.lock().expect("slot lock").take().is_some() {
            self.budget.inner.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_budget_closes_the_least_recently_used_and_reopens_on_use() {
        let d = tempfile::tempdir().unwrap();
        let files = OpenFiles::new(MIN_OPEN_FILES);
        let segs: Vec<SegmentFile> = (0..40)
            .map(|i| {
                let f = files
                    .open(&d.path().join(format!("{i}.log")), true)
                    .unwrap();
                f.get()
                    .unwrap()
                    .write_all(format!("{i}").as_bytes())
                    .unwrap();
                f
            })
            .collect();
        assert!(files.open_now() <= MIN_OPEN_FILES, "{}", files.open_now());
        let opened = files.opens();
        // The newest file is open; the first was closed and reopens with its own content.
        segs[39].get().unwrap();
        assert_eq!(files.opens(), opened);
        let mut s = String::new();
        io::Read::read_to_string(&mut &*segs[0].get().unwrap(), &mut s).unwrap();
        assert_eq!(s, "0");
        assert_eq!(files.opens(), opened + 1);
        assert!(files.open_now() <= MIN_OPEN_FILES);
        // A file in constant use is never the one closed.
        for s in &segs[1..] {
            segs[0].get().unwrap();
            s.get().unwrap();
        }
        let before = files.opens();
        segs[0].get().unwrap();
        assert_eq!(files.opens(), before);
        drop(segs);
        assert_eq!(files.open_now(), 0);
    }

    #[test]
    fn a_replaced_file_is_an_error_not_other_bytes() {
        let d = tempfile::tempdir().unwrap();
        let files = OpenFiles::new(MIN_OPEN_FILES);
        let path = d.path().join("0.log");
        let seg = files.open(&path, true).unwrap();
        seg.close();
        // Written beside it first, so the new file cannot get the old one's inode.
        let other = d.path().join("other");
        std::fs::write(&other, b"another file").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let e = seg.get().unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        // A reader holding the file keeps it through a close.
        let seg = files.open(&d.path().join("1.log"), true).unwrap();
        let held = seg.get().unwrap();
        seg.close();
        (&*held).write_all(b"still open").unwrap();
        assert_eq!(files.open_now(), 0);
    }
}
