//! Atomic text checkpoint files.
//!
//! Exists because several small metadata files (leader-epoch-checkpoint,
//! recovery-point-offset-checkpoint, log-start-offset-checkpoint) share
//! Kafka's text format: a version line `0`, an entry-count line, then one
//! whitespace-separated entry per line.
//!
//! Crash behaviour: files are written to `<name>.tmp`, fsynced, renamed over
//! the target and the directory is fsynced, so a reader sees either the old
//! or the new complete file, never a torn one. A leftover `.tmp` is ignored.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::error::StorageError;

/// Atomically replaces `path` with a checkpoint holding `lines` as entries.
pub(crate) fn write(path: &Path, lines: &[String]) -> Result<(), StorageError> {
    let mut text = String::with_capacity(16 + lines.iter().map(|l| l.len() + 1).sum::<usize>());
    text.push_str("0\n");
    text.push_str(&lines.len().to_string());
    text.push('\n');
    for l in lines {
        debug_assert!(!l.contains('\n'));
        text.push_str(l);
        text.push('\n');
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads a checkpoint's entry lines (split on whitespace). A missing file
/// yields no entries.
pub(crate) fn read(path: &Path) -> Result<Vec<Vec<String>>, StorageError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let bad = |why: &str| {
        StorageError::CorruptMessage(format!("malformed checkpoint {}: {why}", path.display()))
    };
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("0") => {}
        _ => return Err(bad("unsupported version")),
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| bad("missing entry count"))?;
    let entries: Vec<Vec<String>> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    if entries.len() != count {
        return Err(bad(&format!(
            "expected {count} entries, found {}",
            entries.len()
        )));
    }
    Ok(entries)
}

/// fsyncs a directory so that renames/creations inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cp");
        assert!(read(&p).unwrap().is_empty());
        write(&p, &["a 1 2".into(), "b 3 4".into()]).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "0\n2\na 1 2\nb 3 4\n");
        let e = read(&p).unwrap();
        assert_eq!(e, vec![vec!["a", "1", "2"], vec!["b", "3", "4"]]);
        fs::write(&p, "0\n3\na 1\n").unwrap();
        assert!(read(&p).is_err());
    }
}
