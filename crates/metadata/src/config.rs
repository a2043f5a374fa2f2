//! Definitions of configuration keys: their Kafka names, types, defaults and validation.
//!
//! Topic-level keys live here because the controller validates them on CreateTopics and
//! AlterConfigs; the broker's own keys use the same [`ConfigType`] for validation. Every
//! topic key names the broker key that supplies its default (Kafka's "synonym").

/// The type of a config value, with its bounds or allowed values.
#[derive(Debug, Clone, Copy)]
pub enum ConfigType {
    /// 64-bit integer with an inclusive minimum.
    Long {
        min: i64,
    },
    /// 32-bit integer with an inclusive minimum.
    Int {
        min: i32,
    },
    /// Floating point value in an inclusive range.
    Double {
        min: f64,
        max: f64,
    },
    Boolean,
    /// One of the given strings (case-sensitive, as Kafka).
    Enum(&'static [&'static str]),
    /// A comma-separated list whose items are each one of the given strings.
    List(&'static [&'static str]),
    /// Free-form text.
    Text,
    /// Replicas a replication throttle applies to: `*`, or `partition:broker,...` (empty:
    /// none).
    ReplicaList,
}

impl ConfigType {
    /// Checks `value` against the type; the error says what was expected.
    pub fn validate(&self, value: &str) -> Result<(), String> {
        let v = value.trim();
        match self {
            ConfigType::Long { min } => match v.parse::<i64>() {
                Ok(n) if n >= *min => Ok(()),
                Ok(n) => Err(format!("value {n} is below the minimum {min}")),
                Err(_) => Err(format!("'{value}' is not a 64-bit integer")),
            },
            ConfigType::Int { min } => match v.parse::<i32>() {
                Ok(n) if n >= *min => Ok(()),
                Ok(n) => Err(format!("value {n} is below the minimum {min}")),
                Err(_) => Err(format!("'{value}' is not a 32-bit integer")),
            },
            ConfigType::Double { min, max } => match v.parse::<f64>() {
                Ok(n) if n >= *min && n <= *max => Ok(()),
                Ok(n) => Err(format!("value {n} is outside [{min}, {max}]")),
                Err(_) => Err(format!("'{value}' is not a number")),
            },
            ConfigType::Boolean => match v.to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err(format!("'{value}' is not true or false")),
            },
            ConfigType::Enum(allowed) => {
                if allowed.contains(&v) {
                    Ok(())
                } else {
                    Err(format!("'{value}' is not one of {}", allowed.join(", ")))
                }
            }
            ConfigType::List(allowed) => {
                let items: Vec<&str> = v.split(',').map(str::trim).collect();
                if items.iter().all(|i| allowed.contains(i)) && !v.is_empty() {
                    Ok(())
                } else {
                    Err(format!("'{value}' is not a list of {}", allowed.join(", ")))
                }
            }
            ConfigType::Text => Ok(()),
            ConfigType::ReplicaList => validate_replica_list(v),
        }
    }

    /// The Kafka DescribeConfigs config type code.
    pub fn kafka_type_code(&self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::Text | ConfigType::Enum(_) => 2,
            ConfigType::Int { .. } => 3,
            ConfigType::Long { .. } => 5,
            ConfigType::Double { .. } => 6,
            ConfigType::List(_) | ConfigType::ReplicaList => 7,
        }
    }
}

/// Whether a `*.replication.throttled.replicas` value names replica `broker` of
/// `partition`: `*` (all), or a comma-separated list of `partition:broker`.
pub fn names_replica(list: &str, partition: i32, broker: i32) -> bool {
    let list = list.trim();
    list == "*"
        || list.split(',').any(|item| {
            item.trim().split_once(':').is_some_and(|(p, b)| {
                p.trim().parse() == Ok(partition) && b.trim().parse() == Ok(broker)
            })
        })
}

fn validate_replica_list(list: &str) -> Result<(), String> {
    if list.is_empty() || list == "*" {
        return Ok(());
    }
    for item in list.split(',') {
        let ok = item.trim().split_once(':').is_some_and(|(p, b)| {
            p.trim().parse::<i32>().is_ok_and(|p| p >= 0)
                && b.trim().parse::<i32>().is_ok_and(|b| b >= 0)
        });
        if !ok {
            return Err(format!(
                "'{item}' is not partition:broker (the value is '*' or a list of partition:broker)"
            ));
        }
    }
    Ok(())
}

/// One topic-level config key.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// The value used when neither the topic nor the broker sets it.
    pub default: &'static str,
    /// The broker-level key that supplies the default, if any.
    pub broker_synonym: Option<&'static str>,
    pub doc: &'static str,
}

const MAX_LONG: &str = "9223372036854775807";

const fn def(
    name: &'static str,
    ty: ConfigType,
    default: &'static str,
    broker_synonym: Option<&'static str>,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        ty,
        default,
        broker_synonym,
        doc,
    }
}

/// Every topic-level key Gregor accepts.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        ConfigType::List(&["delete", "compact"]),
        "delete",
        Some("log.cleanup.policy"),
        "delete and/or compact old segments",
    ),
    def(
        "compression.type",
        ConfigType::Enum(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        "producer",
        Some("compression.type"),
        "final compression of the topic's data; producer keeps the producer's codec",
    ),
    def(
        "delete.retention.ms",
        ConfigType::Long { min: 0 },
        "86400000",
        Some("log.cleaner.delete.retention.ms"),
        "how long tombstones are kept on compacted topics",
    ),
    def(
        "file.delete.delay.ms",
        ConfigType::Long { min: 0 },
        "60000",
        Some("log.segment.delete.delay.ms"),
        "delay before a deleted segment's files are removed",
    ),
    def(
        "flush.messages",
        ConfigType::Long { min: 1 },
        MAX_LONG,
        Some("log.flush.interval.messages"),
        "fsync after this many messages",
    ),
    def(
        "flush.ms",
        ConfigType::Long { min: 0 },
        MAX_LONG,
        Some("log.flush.interval.ms"),
        "fsync after this many milliseconds",
    ),
    def(
        "index.interval.bytes",
        ConfigType::Int { min: 0 },
        "4096",
        Some("log.index.interval.bytes"),
        "bytes between offset index entries",
    ),
    def(
        "max.compaction.lag.ms",
        ConfigType::Long { min: 1 },
        MAX_LONG,
        Some("log.cleaner.max.compaction.lag.ms"),
        "longest time a record stays uncompacted",
    ),
    def(
        "max.message.bytes",
        ConfigType::Int { min: 0 },
        "1048588",
        Some("message.max.bytes"),
        "largest record batch accepted",
    ),
    def(
        "message.timestamp.type",
        ConfigType::Enum(&["CreateTime", "LogAppendTime"]),
        "CreateTime",
        Some("log.message.timestamp.type"),
        "whether stored timestamps are the producer's or the broker's",
    ),
    def(
        "min.cleanable.dirty.ratio",
        ConfigType::Double { min: 0.0, max: 1.0 },
        "0.5",
        Some("log.cleaner.min.cleanable.ratio"),
        "dirty share of the log that triggers compaction",
    ),
    def(
        "min.compaction.lag.ms",
        ConfigType::Long { min: 0 },
        "0",
        Some("log.cleaner.min.compaction.lag.ms"),
        "shortest time a record stays uncompacted",
    ),
    def(
        "min.insync.replicas",
        ConfigType::Int { min: 1 },
        "1",
        Some("min.insync.replicas"),
        "replicas that must have a write for acks=all",
    ),
    def(
        "preallocate",
        ConfigType::Boolean,
        "false",
        Some("log.preallocate"),
        "preallocate segment files",
    ),
    def(
        "retention.bytes",
        ConfigType::Long { min: -1 },
        "-1",
        Some("log.retention.bytes"),
        "largest partition size before old segments are deleted (-1: no limit)",
    ),
    def(
        "retention.ms",
        ConfigType::Long { min: -1 },
        "604800000",
        Some("log.retention.ms"),
        "age after which segments are deleted (-1: no limit)",
    ),
    def(
        "segment.bytes",
        ConfigType::Int { min: 14 },
        "1073741824",
        Some("log.segment.bytes"),
        "size at which a segment is rolled",
    ),
    def(
        "segment.index.bytes",
        ConfigType::Int { min: 4 },
        "10485760",
        Some("log.index.size.max.bytes"),
        "largest offset index size",
    ),
    def(
        "segment.jitter.ms",
        ConfigType::Long { min: 0 },
        "0",
        Some("log.roll.jitter.ms"),
        "random jitter subtracted from segment.ms",
    ),
    def(
        "segment.ms",
        ConfigType::Long { min: 1 },
        "604800000",
        Some("log.roll.ms"),
        "age at which a segment is rolled",
    ),
    def(
        "unclean.leader.election.enable",
        ConfigType::Boolean,
        "false",
        Some("unclean.leader.election.enable"),
        "allow an out-of-sync replica to become leader",
    ),
    def(
        "message.timestamp.before.max.ms",
        ConfigType::Long { min: 0 },
        MAX_LONG,
        Some("log.message.timestamp.before.max.ms"),
        "how far in the past a CreateTime timestamp may be",
    ),
    def(
        "message.timestamp.after.max.ms",
        ConfigType::Long { min: 0 },
        MAX_LONG,
        Some("log.message.timestamp.after.max.ms"),
        "how far in the future a CreateTime timestamp may be",
    ),
    // Accepted so Kafka tools and clients that set them keep working; they change nothing.
    def(
        "message.format.version",
        ConfigType::Text,
        "3.0-IV1",
        Some("log.message.format.version"),
        "compatibility only: batches are always stored as the producer sent them (v2)",
    ),
    def(
        "message.downconversion.enable",
        ConfigType::Boolean,
        "true",
        Some("log.message.downconversion.enable"),
        "compatibility only: Gregor serves v2 batches to every client it supports",
    ),
    def(
        "message.timestamp.difference.max.ms",
        ConfigType::Long { min: 0 },
        MAX_LONG,
        Some("log.message.timestamp.difference.max.ms"),
        "compatibility only (deprecated in Kafka)",
    ),
    def(
        "leader.replication.throttled.replicas",
        ConfigType::ReplicaList,
        "",
        None,
        "replicas ('*' or partition:broker,...) whose leader sends at most leader.replication.throttled.rate bytes/s while out of the ISR",
    ),
    def(
        "follower.replication.throttled.replicas",
        ConfigType::ReplicaList,
        "",
        None,
        "replicas ('*' or partition:broker,...) whose follower copies at most follower.replication.throttled.rate bytes/s while out of the ISR",
    ),
];

/// The definition of topic key `name`.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Validates one topic config key and value; the error names the key.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), String> {
    let def = topic_config(name).ok_or_else(|| format!("unknown topic config '{name}'"))?;
    def.ty
        .validate(value)
        .map_err(|e| format!("invalid value for topic config '{name}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_types() {
        assert!(validate_topic_config("segment.bytes", "1024").is_ok());
        assert!(validate_topic_config("segment.bytes", "10").is_err());
        assert!(validate_topic_config("segment.bytes", "x").is_err());
        assert!(validate_topic_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_topic_config("cleanup.policy", "compact,nope").is_err());
        assert!(validate_topic_config("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate_topic_config("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate_topic_config("no.such.key", "1").is_err());
        assert!(validate_topic_config("preallocate", "TRUE").is_ok());
        let throttled = "leader.replication.throttled.replicas";
        assert!(validate_topic_config(throttled, "0:1, 2:3").is_ok());
        assert!(validate_topic_config(throttled, "*").is_ok());
        assert!(validate_topic_config(throttled, "").is_ok());
        assert!(validate_topic_config(throttled, "0:x").is_err());
        assert!(validate_topic_config(throttled, "0-1").is_err());
        assert!(names_replica("*", 3, 7));
        assert!(names_replica("0:1, 3:7", 3, 7));
        assert!(!names_replica("0:1,3:7", 3, 1));
        assert!(!names_replica("", 0, 1));
    }

    #[test]
    fn every_default_is_valid() {
        for d in TOPIC_CONFIGS {
            d.ty.validate(d.default)
                .unwrap_or_else(|e| panic!("{}: {e}", d.name));
        }
    }
}
