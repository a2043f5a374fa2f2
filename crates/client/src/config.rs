//! Configuration: `(key, value)` pairs using Kafka's key names and defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::records::Compression;

use crate::error::ConfigError;

/// Raw client configuration: string keys and values, as in Kafka's `Properties`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    values: BTreeMap<String, String>,
}

impl ClientConfig {
    pub fn new() -> ClientConfig {
        ClientConfig::default()
    }

    /// Builds a configuration from pairs; later pairs override earlier ones.
    pub fn from_pairs<K, V, I>(pairs: I) -> ClientConfig
    where
        K: Into<String>,
        V: Into<String>,
        I: IntoIterator<Item = (K, V)>,
    {
        let mut c = ClientConfig::new();
        for (k, v) in pairs {
            c.set(k, v);
        }
        c
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut ClientConfig {
        self.values.insert(
            key.into().trim().to_string(),
            value.into().trim().to_string(),
        );
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub(crate) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn int(
        &self,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        let Some(raw) = self.get(key) else {
            return Ok(default);
        };
        let v: i64 = raw
            .parse()
            .map_err(|_| Self::invalid(key, raw, "not an integer"))?;
        if v < min || v > max {
            return Err(Self::invalid(
                key,
                raw,
                format!("must be in [{min}, {max}]"),
            ));
        }
        Ok(v)
    }

    pub(crate) fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Self::invalid(key, raw, "expected true or false")),
            },
        }
    }

    /// `bootstrap.servers` as `host:port` strings (required, non-empty).
    pub fn bootstrap_servers(&self) -> Result<Vec<String>, ConfigError> {
        const KEY: &str = "bootstrap.servers";
        let raw = self.get(KEY).ok_or(ConfigError::Missing(KEY))?;
        let mut out = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let addr = part.strip_prefix("PLAINTEXT://").unwrap_or(part);
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(Self::invalid(
                    KEY,
                    raw,
                    format!("`{part}` is not host:port"),
                ));
            }
            out.push(addr.to_string());
        }
        if out.is_empty() {
            return Err(Self::invalid(KEY, raw, "no servers given"));
        }
        Ok(out)
    }
}

/// Which partitioner `partitioner.class` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionerKind {
    Default,
    RoundRobin,
}

/// Validated producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    /// 0, 1 or -1 (`all`).
    pub acks: i16,
    pub retries: i32,
    pub retry_backoff: Duration,
    pub request_timeout: Duration,
    pub delivery_timeout: Duration,
    pub linger: Duration,
    pub batch_size: usize,
    pub buffer_memory: usize,
    pub max_block: Duration,
    pub max_request_size: usize,
    pub compression: Compression,
    pub max_in_flight: usize,
    pub enable_idempotence: bool,
    pub partitioner: PartitionerKind,
    pub metadata_max_age: Duration,
    /// `transactional.id`: makes the producer transactional (implies idempotence, acks=all).
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`: how long the coordinator lets a transaction stay open.
    pub transaction_timeout: Duration,
}

const PRODUCER_KEYS: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "acks",
    "retries",
    "retry.backoff.ms",
    "request.timeout.ms",
    "delivery.timeout.ms",
    "linger.ms",
    "batch.size",
    "buffer.memory",
    "max.block.ms",
    "max.request.size",
    "compression.type",
    "max.in.flight.requests.per.connection",
    "enable.idempotence",
    "partitioner.class",
    "metadata.max.age.ms",
    "transactional.id",
    "transaction.timeout.ms",
];

fn ms(v: i64) -> Duration {
    Duration::from_millis(v as u64)
}

impl ProducerConfig {
    /// Validates `config` for a producer. Unknown keys are rejected so typos surface.
    pub fn from_config(config: &ClientConfig) -> Result<ProducerConfig, ConfigError> {
        if let Some(k) = config.keys().find(|k| !PRODUCER_KEYS.contains(k)) {
            return Err(ConfigError::Unknown(k.to_string()));
        }
        const I32: i64 = i32::MAX as i64;
        let acks = match config.get("acks").unwrap_or("all") {
            "all" | "-1" => -1,
            "0" => 0,
            "1" => 1,
            other => {
                return Err(ClientConfig::invalid(
                    "acks",
                    other,
                    "expected 0, 1, -1 or all",
                ))
            }
        };
        let compression = match config
            .get("compression.type")
            .unwrap_or("none")
            .to_ascii_lowercase()
            .as_str()
        {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => {
                return Err(ClientConfig::invalid(
                    "compression.type",
                    config.get("compression.type").unwrap_or_default(),
                    "expected none, gzip, snappy, lz4 or zstd",
                ))
            }
        };
        let partitioner = match config.get("partitioner.class") {
            None | Some("default") => PartitionerKind::Default,
            Some("round_robin")
            | Some("roundrobin")
            | Some("org.apache.kafka.clients.producer.RoundRobinPartitioner") => {
                PartitionerKind::RoundRobin
            }
            Some(other) => {
                return Err(ClientConfig::invalid(
                    "partitioner.class",
                    other,
                    "expected default or round_robin (or use Producer::with_partitioner)",
                ))
            }
        };
        let linger = config.int("linger.ms", 5, 0, I32)?;
        let request_timeout = config.int("request.timeout.ms", 30_000, 1, I32)?;
        let delivery_timeout = match config.get("delivery.timeout.ms") {
            Some(_) => {
                let v = config.int("delivery.timeout.ms", 120_000, 0, I32)?;
                if v < linger + request_timeout {
                    return Err(ClientConfig::invalid(
                        "delivery.timeout.ms",
                        config.get("delivery.timeout.ms").unwrap_or_default(),
                        format!(
                            "must be at least linger.ms + request.timeout.ms = {}",
                            linger + request_timeout
                        ),
                    ));
                }
                v
            }
            None => 120_000.max(linger + request_timeout),
        };
        let max_in_flight = config.int("max.in.flight.requests.per.connection", 5, 1, I32)?;
        let retries = config.int("retries", I32, 0, I32)?;
        let transactional_id = match config.get("transactional.id") {
            None => None,
            Some("") => {
                return Err(ClientConfig::invalid(
                    "transactional.id",
                    "",
                    "must not be empty (leave it unset for a non-transactional producer)",
                ))
            }
            Some(id) => Some(id.to_string()),
        };
        // A transactional producer needs idempotence as if it were set explicitly.
        let explicit_idempotence =
            config.get("enable.idempotence").is_some() || transactional_id.is_some();
        let mut enable_idempotence = config.boolean("enable.idempotence", true)?;
        if transactional_id.is_some() && !enable_idempotence {
            return Err(ClientConfig::invalid(
                "enable.idempotence",
                "false",
                "must be true when transactional.id is set",
            ));
        }
        if enable_idempotence {
            // As in Kafka 3.x: an explicit `true` conflicting with other settings is an error,
            // the implicit default silently yields to them.
            let conflict = if acks != -1 {
                Some(("acks", "must be all (-1) when enable.idempotence is true"))
            } else if max_in_flight > 5 {
                Some((
                    "max.in.flight.requests.per.connection",
                    "must be at most 5 when enable.idempotence is true",
                ))
            } else if retries == 0 {
                Some((
                    "retries",
                    "must be positive when enable.idempotence is true",
                ))
            } else {
                None
            };
            if let Some((key, reason)) = conflict {
                if explicit_idempotence {
                    return Err(ClientConfig::invalid(
                        key,
                        config.get(key).unwrap_or_default(),
                        reason,
                    ));
                }
                enable_idempotence = false;
            }
        }
        let batch_size = config.int("batch.size", 16_384, 0, I32)? as usize;
        let buffer_memory = config.int("buffer.memory", 33_554_432, 0, i64::MAX)? as usize;
        Ok(ProducerConfig {
            bootstrap_servers: config.bootstrap_servers()?,
            client_id: config
                .get("client.id")
                .unwrap_or("gregor-producer")
                .to_string(),
            acks,
            retries: retries as i32,
            retry_backoff: ms(config.int("retry.backoff.ms", 100, 0, I32)?),
            request_timeout: ms(request_timeout),
            delivery_timeout: ms(delivery_timeout),
            linger: ms(linger),
            batch_size: batch_size.max(1),
            buffer_memory,
            max_block: ms(config.int("max.block.ms", 60_000, 0, i64::MAX / 2)?),
            max_request_size: config.int("max.request.size", 1_048_576, 0, I32)? as usize,
            compression,
            max_in_flight: max_in_flight as usize,
            enable_idempotence,
            partitioner,
            metadata_max_age: ms(config.int("metadata.max.age.ms", 300_000, 0, I32)?),
            transactional_id,
            transaction_timeout: ms(config.int("transaction.timeout.ms", 60_000, 1, I32)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<ProducerConfig, ConfigError> {
        let mut all = vec![("bootstrap.servers", "localhost:9092")];
        all.extend_from_slice(pairs);
        ProducerConfig::from_config(&ClientConfig::from_pairs(all.iter().copied()))
    }

    #[test]
    fn defaults_match_kafka() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.acks, -1);
        assert_eq!(c.batch_size, 16_384);
        assert_eq!(c.buffer_memory, 33_554_432);
        assert_eq!(c.linger, Duration::from_millis(5));
        assert_eq!(c.max_block, Duration::from_secs(60));
        assert_eq!(c.retry_backoff, Duration::from_millis(100));
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.delivery_timeout, Duration::from_secs(120));
        assert_eq!(c.max_in_flight, 5);
        assert!(c.enable_idempotence);
        assert_eq!(c.compression, Compression::None);
    }

    #[test]
    fn errors_name_the_key() {
        let e = cfg(&[("acks", "2")]).unwrap_err();
        assert!(e.to_string().contains("`acks`"), "{e}");
        let e = cfg(&[("linger.ms", "soon")]).unwrap_err();
        assert!(e.to_string().contains("`linger.ms`"), "{e}");
        let e = cfg(&[("compression.type", "brotli")]).unwrap_err();
        assert!(e.to_string().contains("`compression.type`"), "{e}");
        let e = cfg(&[("lingerms", "5")]).unwrap_err();
        assert_eq!(e, ConfigError::Unknown("lingerms".into()));
        let e = ProducerConfig::from_config(&ClientConfig::new()).unwrap_err();
        assert_eq!(e, ConfigError::Missing("bootstrap.servers"));
        let e = cfg(&[("bootstrap.servers", "nohost")]).unwrap_err();
        assert!(e.to_string().contains("`bootstrap.servers`"), "{e}");
        let e = cfg(&[("delivery.timeout.ms", "1000")]).unwrap_err();
        assert!(e.to_string().contains("`delivery.timeout.ms`"), "{e}");
    }

    #[test]
    fn idempotence_conflicts() {
        // Implicit idempotence yields to acks=1.
        assert!(!cfg(&[("acks", "1")]).unwrap().enable_idempotence);
        // Explicit idempotence with acks=1 is an error naming acks.
        let e = cfg(&[("acks", "1"), ("enable.idempotence", "true")]).unwrap_err();
        assert!(e.to_string().contains("`acks`"), "{e}");
        let e = cfg(&[
            ("max.in.flight.requests.per.connection", "6"),
            ("enable.idempotence", "true"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("max.in.flight"), "{e}");
    }

    #[test]
    fn transactional_id_implies_idempotence() {
        let c = cfg(&[("transactional.id", "tx")]).unwrap();
        assert!(c.enable_idempotence);
        assert_eq!(c.transactional_id.as_deref(), Some("tx"));
        assert_eq!(c.transaction_timeout, Duration::from_secs(60));
        assert_eq!(cfg(&[]).unwrap().transactional_id, None);
        // Conflicting settings are errors, not a silent downgrade.
        let e = cfg(&[("transactional.id", "tx"), ("acks", "1")]).unwrap_err();
        assert!(e.to_string().contains("`acks`"), "{e}");
        let e = cfg(&[("transactional.id", "tx"), ("enable.idempotence", "false")]).unwrap_err();
        assert!(e.to_string().contains("`enable.idempotence`"), "{e}");
        let e = cfg(&[("transactional.id", "")]).unwrap_err();
        assert!(e.to_string().contains("`transactional.id`"), "{e}");
    }
}
