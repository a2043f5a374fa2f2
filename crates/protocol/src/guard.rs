//! The request guard: a cheap structural check of a request frame before the codec sees it.
//!
//! The `kafka-protocol` decoders size their vectors from counts read off the wire before
//! checking that the bytes for those elements exist, so a tiny frame can ask for gigabytes.
//! [`check_request`] walks the frame with a per-field description of every supported
//! (api key, version) (see [`schema`]) and rejects it when
//!
//! * the frame ends before a field does,
//! * an array count (classic `i32` or compact varint) or a tagged-field count is larger than
//!   the remaining bytes divided by the smallest wire size of one element,
//! * a string or bytes length is negative (other than `-1` for null) or longer than the rest
//!   of the frame,
//! * a varint is longer than its maximal width or overflows its type,
//! * a known tagged field does not occupy exactly the size it announces, or
//! * the estimated memory of the decoded request (every array's count times an estimate of
//!   one element in memory) exceeds the caller's cap.
//!
//! On purpose it is more lenient than the codec where leniency costs nothing: it does not
//! check UTF-8, it accepts null for every string, bytes and array (the codec rejects null
//! where its Rust type is not an `Option`), it skips tags the codec would refuse for the
//! version, and it ignores bytes after the body (the codec does too). So whatever the codec
//! accepts, the guard accepts, except for encodings no conforming client produces (over-long
//! varints and tagged fields whose announced size is wrong) and requests over the memory cap.

pub mod schema;
#[cfg(test)]
mod tests;

use kafka_protocol::messages::ApiKey;
use schema::{Field, Ty};

/// Why a request frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The header is well formed but Gregor does not serve this api key and version (or does
    /// not know the api key at all). The broker answers such requests with UNSUPPORTED_VERSION.
    #[error("unsupported request: api key {api_key} version {api_version}")]
    UnsupportedVersion { api_key: i16, api_version: i16 },
    /// The frame cannot be a valid request, or decoding it would take too much memory.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Estimated in-memory size of one decoded struct element of an array.
pub const STRUCT_ELEMENT_BYTES: usize = 256;
/// Estimated in-memory size of one decoded string or bytes element of an array.
pub const STRING_ELEMENT_BYTES: usize = 32;
/// Estimated in-memory size of one decoded array element of an array.
pub const ARRAY_ELEMENT_BYTES: usize = 32;
/// Estimated in-memory size of one other primitive element of an array (at least this much).
pub const PRIMITIVE_ELEMENT_BYTES: usize = 8;
/// Estimated in-memory size of one tagged field (a map entry).
pub const TAGGED_FIELD_BYTES: usize = 64;

/// Checks one whole request frame (request header then body, without the 4-byte length
/// prefix) before it is decoded.
///
/// Returns `Ok(())` when decoding the frame with `kafka-protocol` is safe: all lengths and
/// counts fit in the frame and the estimated decoded size is at most `max_decoded_bytes`.
/// Returns [`GuardError::UnsupportedVersion`] for a well-formed header whose api key and
/// version are not in [`crate::versions::SUPPORTED`] (the body is then not looked at).
pub fn check_request(frame: &[u8], max_decoded_bytes: usize) -> Result<(), GuardError> {
    check_frame(frame, max_decoded_bytes, crate::versions::is_supported)
}

/// [`check_request`] for the inter-node requests a broker sends to the active controller
/// (the layouts of [`schema::EXTRA`]: BrokerRegistration v0-4, BrokerHeartbeat v0-1,
/// AlterPartition v2-3, AllocateProducerIds v0), which clients are never served.
pub fn check_controller_request(frame: &[u8], max_decoded_bytes: usize) -> Result<(), GuardError> {
    check_frame(frame, max_decoded_bytes, |key, version| {
        schema::EXTRA
            .iter()
            .any(|a| a.key == key && (a.min..=a.max).contains(&version))
    })
}

/// [`check_request`] with a different notion of which (api, version) pairs are served; the
/// layout must still be described in [`schema`].
pub(crate) fn check_frame(
    frame: &[u8],
    max_decoded_bytes: usize,
    served: impl Fn(ApiKey, i16) -> bool,
) -> Result<(), GuardError> {
    let mut w = Walker {
        buf: frame,
        pos: 0,
        end: frame.len(),
        mem: 0,
        cap: max_decoded_bytes,
        version: 0,
        flexible: false,
    };
    // Request header v1 (v0 only carries the first three fields and is used by no api
    // Gregor serves); the client id stays a classic nullable string even in header v2.
    let api_key = w.fixed_i16("request_api_key")?;
    let api_version = w.fixed_i16("request_api_version")?;
    w.take(4, "correlation_id")?;
    w.value("client_id", &Ty::String)?;
    let unsupported = GuardError::UnsupportedVersion {
        api_key,
        api_version,
    };
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Err(unsupported);
    };
    if key.request_header_version(api_version) >= 2 {
        w.flexible = true;
        w.tagged_fields(&[])?;
    }
    if !served(key, api_version) {
        return Err(unsupported);
    }
    let Some(api) = schema::find(key, api_version) else {
        return Err(unsupported);
    };
    w.version = api_version;
    w.flexible = api_version >= api.flexible_from;
    w.structure(api.body)
}

/// The schema of `key` at `version`, if one is written (served or not).
pub fn has_schema(key: ApiKey, version: i16) -> bool {
    schema::find(key, version).is_some()
}

/// A cursor over the frame that knows the version being walked.
struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Exclusive end of the region being walked (narrower than `buf` inside a tagged field).
    end: usize,
    mem: usize,
    cap: usize,
    version: i16,
    flexible: bool,
}

type Res<T> = Result<T, GuardError>;

impl Walker<'_> {
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn err(&self, field: &str, what: impl std::fmt::Display) -> GuardError {
        GuardError::Malformed(format!("{field} at offset {}: {what}", self.pos))
    }

    fn take(&mut self, n: usize, field: &str) -> Res<&[u8]> {
        if n > self.remaining() {
            return Err(self.err(
                field,
                format_args!("needs {n} bytes but only {} remain", self.remaining()),
            ));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    fn fixed_i16(&mut self, field: &str) -> Res<i16> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn fixed_i32(&mut self, field: &str) -> Res<i32> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned varint of at most `max_bytes` bytes whose value fits in `bits` bits.
    fn varint(&mut self, field: &str, max_bytes: u32, bits: u32) -> Res<u64> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.take(1, field)?[0];
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if bits < 64 && value >> bits != 0 {
                    self.pos = start;
                    return Err(self.err(field, format_args!("varint overflows {bits} bits")));
                }
                if i == max_bytes - 1 && bits == 64 && b > 1 {
                    self.pos = start;
                    return Err(self.err(field, "varint overflows 64 bits"));
                }
                return Ok(value);
            }
        }
        self.pos = start;
        Err(self.err(field, format_args!("varint longer than {max_bytes} bytes")))
    }

    fn uvarint32(&mut self, field: &str) -> Res<u32> {
        // Lossless: the value was checked to fit in 32 bits.
        Ok(self.varint(field, 5, 32)? as u32)
    }

    fn charge(&mut self, field: &str, count: usize, each: usize) -> Res<()> {
        let add = count.saturating_mul(each);
        self.mem = self.mem.saturating_add(add);
        if self.mem > self.cap {
            return Err(self.err(
                field,
                format_args!(
                    "decoding would need about {} bytes of memory, more than the cap of {}",
                    self.mem, self.cap
                ),
            ));
        }
        Ok(())
    }

    /// A length or count prefix: classic (`i16` for strings, `i32` otherwise, -1 = null) or
    /// compact (varint of length + 1, 0 = null). `None` is null.
    fn length(&mut self, field: &str, classic_i16: bool) -> Res<Option<usize>> {
        if self.flexible {
            let n = self.uvarint32(field)?;
            return Ok(n.checked_sub(1).map(|n| n as usize));
        }
        let n = if classic_i16 {
            i32::from(self.fixed_i16(field)?)
        } else {
            self.fixed_i32(field)?
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => {
                self.pos -= if classic_i16 { 2 } else { 4 };
                Err(self.err(field, format_args!("negative length {n}")))
            }
            n => Ok(Some(n as usize)),
        }
    }

    fn present(&self, f: &Field) -> bool {
        f.min <= self.version && self.version <= f.max
    }

    /// Smallest number of bytes one value of `ty` occupies at the current version.
    fn min_size(&self, ty: &Ty) -> usize {
        match ty {
            Ty::Fixed(n) => usize::from(*n),
            Ty::VarInt | Ty::VarLong => 1,
            Ty::String => {
                if self.flexible {
                    1
                } else {
                    2
                }
            }
            Ty::Bytes | Ty::Array(_) | Ty::Structs(_) => {
                if self.flexible {
                    1
                } else {
                    4
                }
            }
            Ty::NullableStruct(_) => 1,
            Ty::Struct(fields) => {
                let own: usize = fields
                    .iter()
                    .filter(|f| f.tag.is_none() && self.present(f))
                    .map(|f| self.min_size(&f.ty))
                    .sum();
                own + usize::from(self.flexible)
            }
        }
    }

    fn element_memory(ty: &Ty) -> usize {
        match ty {
            Ty::Fixed(n) => usize::from(*n).max(PRIMITIVE_ELEMENT_BYTES),
            Ty::VarInt | Ty::VarLong => PRIMITIVE_ELEMENT_BYTES,
            Ty::String | Ty::Bytes => STRING_ELEMENT_BYTES,
            Ty::Array(_) | Ty::Structs(_) => ARRAY_ELEMENT_BYTES,
            Ty::Struct(_) | Ty::NullableStruct(_) => STRUCT_ELEMENT_BYTES,
        }
    }

    fn value(&mut self, field: &str, ty: &Ty) -> Res<()> {
        match ty {
            Ty::Fixed(n) => self.take(usize::from(*n), field).map(drop),
            Ty::VarInt => self.varint(field, 5, 32).map(drop),
            Ty::VarLong => self.varint(field, 10, 64).map(drop),
            Ty::String | Ty::Bytes => {
                let start = self.pos;
                if let Some(len) = self.length(field, matches!(ty, Ty::String))? {
                    if len > self.remaining() {
                        let remaining = self.remaining();
                        self.pos = start;
                        return Err(self.err(
                            field,
                            format_args!("length {len} but only {remaining} bytes remain"),
                        ));
                    }
                    self.pos += len;
                }
                Ok(())
            }
            Ty::Array(elem) => self.array(field, elem),
            Ty::Structs(fields) => self.array(field, &Ty::Struct(fields)),
            Ty::Struct(fields) => self.structure(fields),
            Ty::NullableStruct(fields) => {
                // As the codec reads it: 1 is a struct, any other marker null.
                if self.take(1, field)?[0] == 1 {
                    self.structure(fields)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn array(&mut self, field: &str, elem: &Ty) -> Res<()> {
        let start = self.pos;
        let Some(count) = self.length(field, false)? else {
            return Ok(());
        };
        let min = self.min_size(elem);
        if min > 0 && count > self.remaining() / min {
            let remaining = self.remaining();
            self.pos = start;
            return Err(self.err(
                field,
                format_args!(
                    "array of {count} elements of at least {min} bytes each, \
                     but only {remaining} bytes remain"
                ),
            ));
        }
        self.charge(field, count, Self::element_memory(elem))?;
        for _ in 0..count {
            self.value(field, elem)?;
        }
        Ok(())
    }

    fn structure(&mut self, fields: &[Field]) -> Res<()> {
        for f in fields {
            if f.tag.is_none() && self.present(f) {
                self.value(f.name, &f.ty)?;
            }
        }
        if self.flexible {
            self.tagged_fields(fields)?;
        }
        Ok(())
    }

    /// The tagged-field section closing a flexible struct whose fields are `fields`.
    fn tagged_fields(&mut self, fields: &[Field]) -> Res<()> {
        let start = self.pos;
        let count = self.uvarint32("tagged fields")? as usize;
        // Each tagged field takes at least a one-byte tag and a one-byte size.
        if count > self.remaining() / 2 {
            let remaining = self.remaining();
            self.pos = start;
            return Err(self.err(
                "tagged fields",
                format_args!("{count} tagged fields but only {remaining} bytes remain"),
            ));
        }
        self.charge("tagged fields", count, TAGGED_FIELD_BYTES)?;
        for _ in 0..count {
            let tag = self.uvarint32("tag")?;
            let size = self.uvarint32("tagged field size")? as usize;
            if size > self.remaining() {
                return Err(self.err(
                    "tagged field",
                    format_args!(
                        "tag {tag} has size {size} but only {} bytes remain",
                        self.remaining()
                    ),
                ));
            }
            let known = fields
                .iter()
                .find(|f| f.tag == Some(tag) && self.present(f));
            match known {
                // The codec decodes a known tag in place, ignoring the announced size, so the
                // value must fill exactly that size for the guard and the codec to agree.
                Some(f) => {
                    let outer_end = self.end;
                    self.end = self.pos + size;
                    self.value(f.name, &f.ty)?;
                    if self.pos != self.end {
                        return Err(self.err(
                            f.name,
                            format_args!("tagged field {tag} is shorter than its size {size}"),
                        ));
                    }
                    self.end = outer_end;
                }
                None => self.pos += size,
            }
        }
        Ok(())
    }
}
