//! Key/value serializers and deserializers, so producers and consumers can work with typed
//! keys and values instead of raw bytes. A null key or value never reaches them.

use bytes::Bytes;

use crate::error::{Error, Result};

/// Turns a key or value of type `T` into the bytes written to `topic`.
pub trait Serializer<T: ?Sized>: Send + Sync {
    /// Fails with [`Error::Serialization`] when `data` cannot be encoded.
    fn serialize(&self, topic: &str, data: &T) -> Result<Bytes>;
}

/// Turns the bytes of a key or value read from `topic` back into a `T`.
pub trait Deserializer<T>: Send + Sync {
    /// Fails with [`Error::Serialization`] when `data` is not a valid encoding.
    fn deserialize(&self, topic: &str, data: Bytes) -> Result<T>;
}

/// Passes bytes through unchanged (`Bytes` without copying, `Vec<u8>` with one copy).
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesSerializer;

/// Hands bytes over unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesDeserializer;

impl Serializer<Bytes> for BytesSerializer {
    fn serialize(&self, _topic: &str, data: &Bytes) -> Result<Bytes> {
        Ok(data.clone())
    }
}

impl Serializer<Vec<u8>> for BytesSerializer {
    fn serialize(&self, _topic: &str, data: &Vec<u8>) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data))
    }
}

impl Deserializer<Bytes> for BytesDeserializer {
    fn deserialize(&self, _topic: &str, data: Bytes) -> Result<Bytes> {
        Ok(data)
    }
}

impl Deserializer<Vec<u8>> for BytesDeserializer {
    fn deserialize(&self, _topic: &str, data: Bytes) -> Result<Vec<u8>> {
        Ok(data.to_vec())
    }
}

/// UTF-8 text.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerializer;

/// UTF-8 text; invalid UTF-8 is an error, not replaced.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringDeserializer;

impl Serializer<String> for StringSerializer {
    fn serialize(&self, _topic: &str, data: &String) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }
}

impl Serializer<str> for StringSerializer {
    fn serialize(&self, _topic: &str, data: &str) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }
}

impl Deserializer<String> for StringDeserializer {
    fn deserialize(&self, topic: &str, data: Bytes) -> Result<String> {
        String::from_utf8(data.to_vec())
            .map_err(|e| Error::Serialization(format!("value from topic {topic}: {e}")))
    }
}

#[cfg(feature = "json")]
pub use json::{JsonDeserializer, JsonSerializer};

#[cfg(feature = "json")]
mod json {
    use super::*;

    /// Any `serde::Serialize` type as JSON (feature `json`).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct JsonSerializer;

    /// Any `serde::de::DeserializeOwned` type from JSON (feature `json`).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct JsonDeserializer;

    impl<T: serde::Serialize + ?Sized> Serializer<T> for JsonSerializer {
        fn serialize(&self, topic: &str, data: &T) -> Result<Bytes> {
            serde_json::to_vec(data)
                .map(Bytes::from)
                .map_err(|e| Error::Serialization(format!("JSON for topic {topic}: {e}")))
        }
    }

    impl<T: serde::de::DeserializeOwned> Deserializer<T> for JsonDeserializer {
        fn deserialize(&self, topic: &str, data: Bytes) -> Result<T> {
            serde_json::from_slice(&data)
                .map_err(|e| Error::Serialization(format!("JSON from topic {topic}: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_bad_utf8_fails() {
        let b = StringSerializer.serialize("t", "héllo").unwrap();
        assert_eq!(&b[..], "héllo".as_bytes());
        let s: String = StringDeserializer.deserialize("t", b).unwrap();
        assert_eq!(s, "héllo");
        let e = StringDeserializer
            .deserialize("t", Bytes::from_static(&[0xff]))
            .unwrap_err();
        assert!(matches!(e, Error::Serialization(_)), "{e}");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trips() {
        let v = vec![1u32, 2, 3];
        let b = JsonSerializer.serialize("t", &v).unwrap();
        assert_eq!(&b[..], b"[1,2,3]");
        let back: Vec<u32> = JsonDeserializer.deserialize("t", b).unwrap();
        assert_eq!(back, v);
        let e = <JsonDeserializer as Deserializer<Vec<u32>>>::deserialize(
            &JsonDeserializer,
            "t",
            Bytes::from_static(b"{"),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Serialization(_)), "{e}");
    }
}
