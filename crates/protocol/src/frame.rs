//! Kafka framing: every request and response is a 4-byte big-endian length, then that many
//! bytes. The length is checked against `socket.request.max.bytes` before any buffer is
//! reserved for the frame, so a hostile length cannot make the broker allocate.

use bytes::{Buf, Bytes, BytesMut};

/// Size of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// The smallest possible request: api key, version, correlation id, client id length.
pub const REQUEST_BYTES_MIN: usize = 10;

/// A frame that cannot be read; the connection must be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error(
        "frame of {size} bytes is shorter than the smallest request ({REQUEST_BYTES_MIN} bytes)"
    )]
    TooSmall { size: usize },
}

/// Takes one complete frame (without its length prefix) off the front of `buf`, if all of it
/// has arrived. `None` means "read more"; on success `buf` has room reserved for the rest of
/// a partially received frame, bounded by `max_bytes`.
pub fn split_frame(buf: &mut BytesMut, max_bytes: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < LENGTH_PREFIX_BYTES {
        return Ok(None);
    }
    let size = i32::from_be_bytes(buf[..LENGTH_PREFIX_BYTES].try_into().expect("4 bytes"));
    if size < 0 || size as usize > max_bytes {
        return Err(FrameError::TooLarge {
            size: size as u32 as usize,
            max: max_bytes,
        });
    }
    let size = size as usize;
    if size < REQUEST_BYTES_MIN {
        return Err(FrameError::TooSmall { size });
    }
    if buf.len() < LENGTH_PREFIX_BYTES + size {
        buf.reserve(LENGTH_PREFIX_BYTES + size - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX_BYTES);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_frames_only() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&12i32.to_be_bytes());
        buf.extend_from_slice(&[1; 5]);
        assert_eq!(split_frame(&mut buf, 100), Ok(None));
        buf.extend_from_slice(&[2; 7]);
        buf.extend_from_slice(&[9; 3]);
        let frame = split_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!(frame.len(), 12);
        assert_eq!(&buf[..], &[9; 3]);
    }

    #[test]
    fn refuses_oversized_negative_and_tiny_frames() {
        let mut buf = BytesMut::from(&200i32.to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut buf, 100),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut buf, 100),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&3i32.to_be_bytes()[..]);
        assert!(matches!(
            split_frame(&mut buf, 100),
            Err(FrameError::TooSmall { .. })
        ));
    }
}
