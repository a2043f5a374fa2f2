//! Response frames whose record bytes come straight from segment files.
//!
//! Exists so a Fetch answer does not copy the records it serves into user memory: the
//! response is encoded with a null placeholder where each file-backed partition's records
//! go, encoded a second time with an empty value there, and the two encodings differ exactly
//! at the placeholders (one byte in flexible versions, four before). The frame is then the
//! bytes between placeholders, each placeholder replaced by the records' length and the file
//! slice itself, sent with `sendfile(2)`. Everything but the records is encoded by the
//! protocol crate as for any response.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use gregor_storage::FileRecords;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::dispatch::encode_response;

/// The first Fetch version with flexible (compact) encodings.
const FIRST_FLEXIBLE_FETCH: i16 = 12;

/// Record bytes this process sent from segment files (all brokers in it).
static SENT_FROM_FILES: AtomicU64 = AtomicU64::new(0);

/// Record bytes sent from segment files since the process started.
pub fn bytes_sent_from_files() -> u64 {
    SENT_FROM_FILES.load(Ordering::Relaxed)
}

/// One part of a response frame.
pub enum Piece {
    Bytes(Bytes),
    File(FileRecords),
}

/// The frame of `response` (length prefix included) with `files` in the partitions whose
/// records are `None`, in encoding order.
pub fn fetch_frame(
    version: i16,
    correlation_id: i32,
    mut response: FetchResponse,
    files: Vec<FileRecords>,
) -> Result<Vec<Piece>, String> {
    let with_nulls = encode_response(
        ApiKey::Fetch,
        version,
        correlation_id,
        &ResponseKind::Fetch(response.clone()),
    )?;
    for p in response
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        p.records.get_or_insert_with(Bytes::new);
    }
    let with_empties = encode_response(
        ApiKey::Fetch,
        version,
        correlation_id,
        &ResponseKind::Fetch(response),
    )?;
    assert_eq!(
        with_nulls.len(),
        with_empties.len(),
        "null and empty encode alike in size"
    );
    let (null, empty): (&[u8], &[u8]) = if version >= FIRST_FLEXIBLE_FETCH {
        (&[0], &[1])
    } else {
        (&[0xff; 4], &[0; 4])
    };
    let mut pieces = Vec::with_capacity(2 * files.len() + 2);
    let mut files = files.into_iter();
    let mut frame_len = 0usize;
    // The length prefix (bytes 0..4) is written last, once the frame's size is known.
    let (mut from, mut at) = (4, 4);
    while at < with_nulls.len() {
        if with_nulls[at] == with_empties[at] {
            at += 1;
            continue;
        }
        let w = null.len();
        assert!(
            with_nulls[at..at + w] == *null && with_empties[at..at + w] == *empty,
            "the encodings differ only at placeholders"
        );
        let file = files.next().expect("a file slice for every placeholder");
        let mut len_prefix = BytesMut::with_capacity(5);
        if version >= FIRST_FLEXIBLE_FETCH {
            put_unsigned_varint(&mut len_prefix, file.len() as u64 + 1);
        } else {
            len_prefix.put_i32(i32::try_from(file.len()).expect("a read is below 2 GiB"));
        }
        let before = with_nulls.slice(from..at);
        frame_len += before.len() + len_prefix.len() + file.len();
        pieces.push(Piece::Bytes(before));
        pieces.push(Piece::Bytes(len_prefix.freeze()));
        pieces.push(Piece::File(file));
        at += w;
        from = at;
    }
    assert!(files.next().is_none(), "a placeholder for every file slice");
    let rest = with_nulls.slice(from..);
    frame_len += rest.len();
    pieces.push(Piece::Bytes(rest));
    let size = i32::try_from(frame_len).map_err(|_| "fetch response above 2 GiB".to_string())?;
    pieces.insert(0, Piece::Bytes(Bytes::copy_from_slice(&size.to_be_bytes())));
    Ok(pieces)
}

fn put_unsigned_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes `pieces` to `stream` in order, file slices with `sendfile`.
pub async fn write_pieces(stream: &mut TcpStream, pieces: &[Piece]) -> io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Bytes(b) => stream.write_all(b).await?,
            Piece::File(f) => send_file(stream, f).await?,
        }
    }
    Ok(())
}

/// Sends the whole slice; a file found shorter than the slice (truncated since the read)
/// is an error, after which the frame is incomplete and the connection must close.
async fn send_file(stream: &TcpStream, f: &FileRecords) -> io::Result<()> {
    let mut offset = libc::off_t::try_from(f.position()).expect("segment positions fit off_t");
    let end = offset + f.len() as libc::off_t;
    let (socket, file) = (stream.as_raw_fd(), f.file().as_raw_fd());
    while offset < end {
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                let count = (end - offset) as usize;
                // SAFETY: both descriptors are open for the call (the stream and the Arc'd
                // file are borrowed), and `offset` is a valid off_t the kernel advances.
                let n = unsafe { libc::sendfile(socket, file, &mut offset, count) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })
            .await?;
        if sent == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment file shorter than the records read from it (truncated during the transfer)",
            ));
        }
        SENT_FROM_FILES.fetch_add(sent as u64, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor_storage::config::LogConfig;
    use gregor_storage::log::{Log, Recovery};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;

    /// The frame's bytes, file slices read in.
    fn flatten(pieces: &[Piece]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(b),
                Piece::File(f) => out.extend_from_slice(&f.to_bytes().unwrap()),
            }
        }
        out
    }

    #[test]
    fn a_frame_from_files_is_the_frame_of_the_copied_records_in_every_version() {
        let d = tempfile::tempdir().unwrap();
        let mut log = Log::open(
            d.path().join("t-0"),
            LogConfig::default(),
            Recovery::default(),
        )
        .unwrap();
        // Sizes around the one-byte varint bound (127) and a large one.
        for n in [1, 40, 3000] {
            log.append_as_leader(&crate::test_batches::batch(-1, -1, -1, n, 0), 0, 0)
                .unwrap();
        }
        let end = log.log_end_offset();
        let slices: Vec<_> = [0, 1, 41]
            .iter()
            .map(|&from| log.read_file(from, 1 << 20, end, true).unwrap().unwrap())
            .collect();
        for version in 4..=12 {
            // Two topics; file-backed partitions between in-memory and empty ones.
            let part = |i: i32, records: Option<Bytes>| {
                PartitionData::default()
                    .with_partition_index(i)
                    .with_high_watermark(end)
                    .with_records(records)
            };
            let build = |file_records: &dyn Fn(usize) -> Option<Bytes>| {
                FetchResponse::default().with_responses(vec![
                    FetchableTopicResponse::default()
                        .with_topic(TopicName("a".into()))
                        .with_partitions(vec![
                            part(0, file_records(0)),
                            part(1, Some(Bytes::from_static(b"in memory"))),
                            part(2, file_records(1)),
                        ]),
                    FetchableTopicResponse::default()
                        .with_topic(TopicName("b".into()))
                        .with_partitions(vec![
                            part(0, Some(Bytes::new())),
                            part(1, file_records(2)),
                        ]),
                ])
            };
            let copied = build(&|i| Some(slices[i].to_bytes().unwrap()));
            let expected =
                encode_response(ApiKey::Fetch, version, 7, &ResponseKind::Fetch(copied)).unwrap();
            let pieces = fetch_frame(version, 7, build(&|_| None), slices.clone()).unwrap();
            assert_eq!(flatten(&pieces), expected.to_vec(), "v{version}");
            let files = pieces
                .iter()
                .filter(|p| matches!(p, Piece::File(_)))
                .count();
            assert_eq!(files, 3);
        }
    }

    /// A log in `root` with one batch of 2,000 records, and a file slice of all of it.
    fn log_and_slice(root: &std::path::Path) -> (Log, FileRecords) {
        let mut log =
            Log::open(root.join("t-0"), LogConfig::default(), Recovery::default()).unwrap();
        log.append_as_leader(&crate::test_batches::batch(-1, -1, -1, 2000, 0), 0, 0)
            .unwrap();
        let end = log.log_end_offset();
        let slice = log.read_file(0, 1 << 20, end, true).unwrap().unwrap();
        (log, slice)
    }

    /// A connection to a peer that reads until it closes; what it read.
    async fn connection_to_reader() -> (TcpStream, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got).await;
            got
        });
        (TcpStream::connect(addr).await.unwrap(), reader)
    }

    #[tokio::test]
    async fn a_slice_whose_segment_was_deleted_is_still_sent_whole() {
        let d = tempfile::tempdir().unwrap();
        let (log, slice) = log_and_slice(d.path());
        let expected = slice.to_bytes().unwrap();
        // The whole partition goes (as a topic deletion does) before the transfer starts.
        log.delete().unwrap();
        assert!(!d.path().join("t-0").exists());
        let (mut stream, reader) = connection_to_reader().await;
        let before = bytes_sent_from_files();
        let pieces = [
            Piece::Bytes(Bytes::from_static(b"head")),
            Piece::File(slice),
        ];
        write_pieces(&mut stream, &pieces).await.unwrap();
        assert!(bytes_sent_from_files() - before >= expected.len() as u64);
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..], &expected[..]);
    }

    #[tokio::test]
    async fn a_file_truncated_under_a_transfer_is_an_error_not_a_short_frame() {
        let d = tempfile::tempdir().unwrap();
        let (_log, slice) = log_and_slice(d.path());
        slice.file().set_len(slice.len() as u64 / 2).unwrap();
        let (mut stream, _reader) = connection_to_reader().await;
        let e = write_pieces(&mut stream, &[Piece::File(slice)])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}
