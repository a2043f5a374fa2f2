//! Consumer settings: Kafka key names and defaults, validated once.

use std::time::Duration;

use super::assignor::Assignor;
use crate::config::ClientConfig;
use crate::error::ConfigError;

/// `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    None,
}

/// Validated consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub group_id: Option<String>,
    pub auto_offset_reset: OffsetReset,
    pub fetch_min_bytes: i32,
    pub fetch_max_wait: Duration,
    pub fetch_max_bytes: i32,
    pub max_partition_fetch_bytes: i32,
    pub max_poll_records: usize,
    /// 0 = read_uncommitted, 1 = read_committed.
    pub isolation_level: i8,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// Accepted for compatibility; the batch decoder always verifies v2 batch CRCs.
    pub check_crcs: bool,
    pub request_timeout: Duration,
    pub retry_backoff: Duration,
    /// Group membership (`subscribe`) settings.
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Used as the rebalance timeout.
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`, in preference order (default: range, then
    /// cooperative-sticky, as in the Java client). The rebalance protocol is cooperative only
    /// when every listed assignor is.
    pub assignors: Vec<Assignor>,
    /// How often a pattern subscription re-reads the topic list.
    pub metadata_max_age: Duration,
}

impl ConsumerConfig {
    /// Whether rebalances are incremental (KIP-429) rather than eager.
    pub fn cooperative(&self) -> bool {
        self.assignors.iter().all(|a| a.is_cooperative())
    }
}

const CONSUMER_KEYS: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "group.id",
    "auto.offset.reset",
    "fetch.min.bytes",
    "fetch.max.wait.ms",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "max.poll.records",
    "isolation.level",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "check.crcs",
    "request.timeout.ms",
    "retry.backoff.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "metadata.max.age.ms",
];

impl ConsumerConfig {
    /// Validates `config` for a consumer. Unknown keys are rejected so typos surface.
    pub fn from_config(config: &ClientConfig) -> Result<ConsumerConfig, ConfigError> {
        if let Some(k) = config.keys().find(|k| !CONSUMER_KEYS.contains(k)) {
            return Err(ConfigError::Unknown(k.to_string()));
        }
        const I32: i64 = i32::MAX as i64;
        let ms = |v: i64| Duration::from_millis(v as u64);
        let auto_offset_reset = match config.get("auto.offset.reset") {
            None => OffsetReset::Latest,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "earliest" => OffsetReset::Earliest,
                "latest" => OffsetReset::Latest,
                "none" => OffsetReset::None,
                _ => {
                    return Err(ClientConfig::invalid(
                        "auto.offset.reset",
                        raw,
                        "expected earliest, latest or none",
                    ))
                }
            },
        };
        let isolation_level = match config.get("isolation.level") {
            None => 0,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "read_uncommitted" => 0,
                "read_committed" => 1,
                _ => {
                    return Err(ClientConfig::invalid(
                        "isolation.level",
                        raw,
                        "expected read_uncommitted or read_committed",
                    ))
                }
            },
        };
        let assignors = match config.get("partition.assignment.strategy") {
            None => vec![Assignor::Range, Assignor::CooperativeSticky],
            Some(raw) => {
                let mut list = Vec::new();
                for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let a = Assignor::from_name(name).ok_or_else(|| {
                        ClientConfig::invalid(
                            "partition.assignment.strategy",
                            raw,
                            format!("unknown assignor {name:?}; expected range, roundrobin or cooperative-sticky"),
                        )
                    })?;
                    if !list.contains(&a) {
                        list.push(a);
                    }
                }
                if list.is_empty() {
                    return Err(ClientConfig::invalid(
                        "partition.assignment.strategy",
                        raw,
                        "needs at least one assignor",
                    ));
                }
                list
            }
        };
        let group_id = match config.get("group.id") {
            None => None,
            Some("") => {
                return Err(ClientConfig::invalid(
                    "group.id",
                    "",
                    "must not be empty (leave it unset for no group)",
                ))
            }
            Some(g) => Some(g.to_string()),
        };
        Ok(ConsumerConfig {
            bootstrap_servers: config.bootstrap_servers()?,
            client_id: config
                .get("client.id")
                .unwrap_or("gregor-consumer")
                .to_string(),
            group_id,
            auto_offset_reset,
            fetch_min_bytes: config.int("fetch.min.bytes", 1, 0, I32)? as i32,
            fetch_max_wait: ms(config.int("fetch.max.wait.ms", 500, 0, I32)?),
            fetch_max_bytes: config.int("fetch.max.bytes", 52_428_800, 0, I32)? as i32,
            max_partition_fetch_bytes: config.int("max.partition.fetch.bytes", 1_048_576, 0, I32)?
                as i32,
            max_poll_records: config.int("max.poll.records", 500, 1, I32)? as usize,
            isolation_level,
            enable_auto_commit: config.boolean("enable.auto.commit", true)?,
            auto_commit_interval: ms(config.int("auto.commit.interval.ms", 5_000, 0, I32)?),
            check_crcs: config.boolean("check.crcs", true)?,
            request_timeout: ms(config.int("request.timeout.ms", 30_000, 1, I32)?),
            retry_backoff: ms(config.int("retry.backoff.ms", 100, 0, I32)?),
            session_timeout: ms(config.int("session.timeout.ms", 45_000, 1, I32)?),
            heartbeat_interval: ms(config.int("heartbeat.interval.ms", 3_000, 1, I32)?),
            max_poll_interval: ms(config.int("max.poll.interval.ms", 300_000, 1, I32)?),
            assignors,
            metadata_max_age: ms(config.int("metadata.max.age.ms", 300_000, 0, I32)?),
        })
    }
}
