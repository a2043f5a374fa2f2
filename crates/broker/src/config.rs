//! The broker's own configuration: Kafka's `server.properties` keys, their defaults, and
//! the topic-level values they imply.
//!
//! Sources, lowest precedence first: built-in defaults, a properties file, `--override`
//! pairs. Unknown keys are reported (not fatal, as Kafka); an invalid value stops start-up
//! with an error naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use gregor_metadata::config::{ConfigType, TOPIC_CONFIGS};
use gregor_storage::config::{LogConfig, TimestampType};

const MAX_LONG: &str = "9223372036854775807";

/// How followers fetch from their leaders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchConfig {
    pub fetchers: usize,
    pub partition_max_bytes: i32,
    pub response_max_bytes: i32,
    pub min_bytes: i32,
    pub max_wait_ms: i32,
    pub backoff: std::time::Duration,
    pub socket_timeout: std::time::Duration,
}

/// The rack-aware replica selector's class name, the one `replica.selector.class` value
/// besides empty that Gregor accepts.
pub const RACK_AWARE_SELECTOR: &str = "org.apache.kafka.common.replica.RackAwareReplicaSelector";

/// One broker-level key.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// `None`: unset unless given (another key supplies the value).
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    ty: ConfigType,
    default: Option<&'static str>,
    doc: &'static str,
) -> BrokerConfigDef {
    BrokerConfigDef {
        name,
        ty,
        default,
        doc,
    }
}

use ConfigType::{Boolean as B, Int as I, Long as L, Text as T};

/// Every broker key Gregor understands.
pub const BROKER_CONFIGS: &[BrokerConfigDef] = &[
    def("node.id", I { min: 0 }, Some("1"), "this broker's id"),
    def(
        "process.roles",
        T,
        Some("broker,controller"),
        "broker,controller (a voter), broker (an observer of the metadata log) or controller (a voter serving no clients)",
    ),
    def(
        "controller.quorum.voters",
        T,
        Some(""),
        "the metadata quorum's voters, id@host:port,...; empty: this node alone",
    ),
    def(
        "controller.listener.names",
        T,
        Some("CONTROLLER"),
        "the name of the listener for quorum traffic in `listeners`",
    ),
    def(
        "broker.heartbeat.interval.ms",
        I { min: 1 },
        Some("2000"),
        "how often a broker heartbeats to the active controller",
    ),
    def(
        "broker.session.timeout.ms",
        I { min: 1 },
        Some("9000"),
        "a broker not heard from for this long is fenced (read by the active controller)",
    ),
    def(
        "broker.rack",
        T,
        None,
        "this broker's rack: replicas of a partition are spread over racks",
    ),
    def(
        "num.replica.fetchers",
        I { min: 1 },
        Some("1"),
        "fetcher tasks (connections) per source broker that followers copy partitions with",
    ),
    def(
        "replica.fetch.max.bytes",
        I { min: 1 },
        Some("1048576"),
        "bytes a follower asks for per partition in one fetch (at least one batch is returned)",
    ),
    def(
        "replica.fetch.response.max.bytes",
        I { min: 1 },
        Some("10485760"),
        "bytes a follower asks for in one whole fetch response",
    ),
    def(
        "replica.fetch.min.bytes",
        I { min: 1 },
        Some("1"),
        "bytes a follower's fetch waits for before the leader answers",
    ),
    def(
        "replica.fetch.wait.max.ms",
        I { min: 0 },
        Some("500"),
        "longest a follower's fetch waits at the leader for min bytes",
    ),
    def(
        "replica.fetch.backoff.ms",
        I { min: 0 },
        Some("1000"),
        "pause before a follower fetches a partition again after an error",
    ),
    def(
        "replica.lag.time.max.ms",
        L { min: 1 },
        Some("30000"),
        "a follower that has not caught up to the leader's log end for this long leaves the ISR",
    ),
    def(
        "replica.socket.timeout.ms",
        I { min: 1 },
        Some("30000"),
        "how long a follower waits for a fetch response beyond replica.fetch.wait.max.ms",
    ),
    def(
        "replica.selector.class",
        T,
        Some(""),
        "empty: consumers read from leaders; org.apache.kafka.common.replica.RackAwareReplicaSelector: the leader sends a consumer with client.rack to an in-sync replica in its rack (KIP-392)",
    ),
    def(
        "inter.broker.listener.name",
        T,
        Some("PLAINTEXT"),
        "the listener brokers use to reach each other (PLAINTEXT only)",
    ),
    def(
        "listeners",
        T,
        Some("PLAINTEXT://127.0.0.1:9092"),
        "where the node listens: one PLAINTEXT listener for clients and brokers, plus CONTROLLER://host:port for the quorum",
    ),
    def(
        "advertised.listeners",
        T,
        None,
        "the address given to clients; defaults to listeners",
    ),
    def(
        "log.dirs",
        T,
        Some("./gregor-data"),
        "where partition data and metadata are stored",
    ),
    def("log.dir", T, None, "used when log.dirs is not set"),
    def(
        "log.open.files.max",
        I { min: 0 },
        Some("0"),
        "most segment files kept open at once (least recently used ones are closed); 0: half the process's open-file limit",
    ),
    def(
        "fetch.zero.copy.enable",
        B,
        Some("true"),
        "send fetched records of 16 KiB and more from segment files with sendfile; false: copy them",
    ),
    def(
        "num.partitions",
        I { min: 1 },
        Some("1"),
        "partitions of auto-created topics and of CreateTopics with -1",
    ),
    def(
        "default.replication.factor",
        ConfigType::Int { min: 1 },
        Some("1"),
        "replication factor when none is given",
    ),
    def(
        "auto.create.topics.enable",
        B,
        Some("true"),
        "create a topic on Metadata for an unknown name",
    ),
    def(
        "message.max.bytes",
        I { min: 0 },
        Some("1048588"),
        "largest record batch accepted (topic: max.message.bytes)",
    ),
    def(
        "socket.request.max.bytes",
        I { min: 1 },
        Some("104857600"),
        "largest request frame; bigger frames close the connection",
    ),
    def(
        "max.connections",
        I { min: 1 },
        Some("2147483647"),
        "accepted connections at once",
    ),
    def(
        "queued.max.requests",
        I { min: 1 },
        Some("500"),
        "accepted for compatibility; each connection has one request in flight",
    ),
    def(
        "num.network.threads",
        I { min: 1 },
        Some("3"),
        "accepted for compatibility; the async runtime serves all connections",
    ),
    def(
        "num.io.threads",
        I { min: 1 },
        Some("8"),
        "accepted for compatibility; the async runtime serves all requests",
    ),
    def(
        "log.segment.bytes",
        I { min: 14 },
        Some("1073741824"),
        "segment size before a roll",
    ),
    def(
        "log.roll.hours",
        I { min: 1 },
        Some("168"),
        "segment age before a roll",
    ),
    def(
        "log.roll.ms",
        L { min: 1 },
        None,
        "segment age before a roll; overrides log.roll.hours",
    ),
    def(
        "log.roll.jitter.ms",
        L { min: 0 },
        Some("0"),
        "random jitter subtracted from the roll age",
    ),
    def(
        "log.index.interval.bytes",
        I { min: 0 },
        Some("4096"),
        "bytes between offset index entries",
    ),
    def(
        "log.index.size.max.bytes",
        I { min: 4 },
        Some("10485760"),
        "largest offset index size",
    ),
    def(
        "log.flush.interval.messages",
        L { min: 1 },
        Some(MAX_LONG),
        "fsync a partition after this many messages",
    ),
    def(
        "log.flush.interval.ms",
        L { min: 0 },
        None,
        "fsync a partition after this many ms; defaults to log.flush.scheduler.interval.ms",
    ),
    def(
        "log.flush.scheduler.interval.ms",
        L { min: 0 },
        Some(MAX_LONG),
        "how often partitions are checked for a time-based flush",
    ),
    def(
        "log.flush.offset.checkpoint.interval.ms",
        I { min: 0 },
        Some("60000"),
        "how often recovery points are checkpointed",
    ),
    def(
        "log.flush.start.offset.checkpoint.interval.ms",
        I { min: 0 },
        Some("60000"),
        "how often log start offsets are checkpointed",
    ),
    def(
        "log.message.timestamp.type",
        ConfigType::Enum(&["CreateTime", "LogAppendTime"]),
        Some("CreateTime"),
        "whose timestamp is stored",
    ),
    def(
        "log.message.timestamp.before.max.ms",
        L { min: 0 },
        Some(MAX_LONG),
        "how far in the past a CreateTime may be",
    ),
    def(
        "log.message.timestamp.after.max.ms",
        L { min: 0 },
        Some(MAX_LONG),
        "how far in the future a CreateTime may be",
    ),
    def(
        "log.retention.hours",
        I { min: -1 },
        Some("168"),
        "retention age in hours",
    ),
    def(
        "log.retention.minutes",
        I { min: -1 },
        None,
        "retention age in minutes; overrides hours",
    ),
    def(
        "log.retention.ms",
        L { min: -1 },
        None,
        "retention age in ms; overrides minutes and hours",
    ),
    def(
        "log.retention.bytes",
        L { min: -1 },
        Some("-1"),
        "largest partition size before old segments go",
    ),
    def(
        "log.retention.check.interval.ms",
        L { min: 1 },
        Some("300000"),
        "how often retention runs",
    ),
    def(
        "log.segment.delete.delay.ms",
        L { min: 0 },
        Some("60000"),
        "delay before deleted segment files are removed",
    ),
    def(
        "log.cleanup.policy",
        ConfigType::List(&["delete", "compact"]),
        Some("delete"),
        "default cleanup policy",
    ),
    def(
        "log.cleaner.delete.retention.ms",
        L { min: 0 },
        Some("86400000"),
        "how long tombstones are kept",
    ),
    def(
        "log.cleaner.min.cleanable.ratio",
        ConfigType::Double { min: 0.0, max: 1.0 },
        Some("0.5"),
        "dirty ratio that triggers compaction",
    ),
    def(
        "log.cleaner.min.compaction.lag.ms",
        L { min: 0 },
        Some("0"),
        "shortest time a record stays uncompacted",
    ),
    def(
        "log.cleaner.max.compaction.lag.ms",
        L { min: 1 },
        Some(MAX_LONG),
        "longest time a record stays uncompacted",
    ),
    def(
        "log.preallocate",
        B,
        Some("false"),
        "preallocate segment files",
    ),
    def(
        "compression.type",
        ConfigType::Enum(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        Some("producer"),
        "default topic compression",
    ),
    def(
        "min.insync.replicas",
        I { min: 1 },
        Some("1"),
        "replicas needed for acks=all",
    ),
    def(
        "unclean.leader.election.enable",
        B,
        Some("false"),
        "allow out-of-sync leaders",
    ),
    def(
        "eligible.leader.replicas.version",
        I { min: 0 },
        Some("1"),
        "1 keeps eligible leader replicas (KIP-966) and the strict min-ISR high watermark; 0 turns both off (read by controllers and brokers: set it alike on every node)",
    ),
    def(
        "metrics.listener",
        T,
        Some("http://127.0.0.1:9644"),
        "HTTP endpoint for /metrics (Prometheus) and /v1/status/live|ready; empty turns it off",
    ),
    def(
        "metrics.partition.series.enable",
        B,
        Some("true"),
        "export the per-partition series (log size and segments, consumer lag); off for very large clusters",
    ),
    def(
        "leader.replication.throttled.rate",
        L { min: 0 },
        Some(MAX_LONG),
        "bytes/s a leader sends to the throttled replicas of its partitions (topic leader.replication.throttled.replicas) while they are out of the ISR",
    ),
    def(
        "follower.replication.throttled.rate",
        L { min: 0 },
        Some(MAX_LONG),
        "bytes/s a follower copies for its throttled replicas (topic follower.replication.throttled.replicas) while they are out of the ISR",
    ),
    def(
        "auto.leader.rebalance.enable",
        B,
        Some("true"),
        "the active controller moves leadership back to preferred replicas",
    ),
    def(
        "leader.imbalance.check.interval.seconds",
        L { min: 1 },
        Some("300"),
        "how often the active controller checks the preferred-leader imbalance",
    ),
    def(
        "leader.imbalance.per.broker.percentage",
        I { min: 0 },
        Some("10"),
        "share of a broker's preferred partitions led elsewhere above which leadership moves back",
    ),
    def(
        "producer.id.expiration.ms",
        I { min: 1 },
        Some("86400000"),
        "how long a silent idempotent producer's state is kept per partition",
    ),
    def(
        "log.cleaner.enable",
        B,
        Some("true"),
        "run the log cleaner for compacted topics",
    ),
    def(
        "log.cleaner.threads",
        I { min: 0 },
        Some("1"),
        "log cleaner threads (one task cleans one partition at a time)",
    ),
    def(
        "log.cleaner.dedupe.buffer.size",
        L { min: 1024 },
        Some("134217728"),
        "memory the cleaner may use for its key map",
    ),
    def(
        "log.cleaner.backoff.ms",
        L { min: 0 },
        Some("15000"),
        "pause of the cleaner when nothing needs cleaning",
    ),
    def(
        "offsets.topic.num.partitions",
        I { min: 1 },
        Some("50"),
        "partitions of __consumer_offsets (fixed once the topic exists)",
    ),
    def(
        "offsets.topic.replication.factor",
        I { min: 1 },
        Some("3"),
        "replication of __consumer_offsets (1 on a single node)",
    ),
    def(
        "offsets.topic.segment.bytes",
        I { min: 14 },
        Some("104857600"),
        "segment size of __consumer_offsets",
    ),
    def(
        "transaction.state.log.num.partitions",
        I { min: 1 },
        Some("50"),
        "partitions of __transaction_state (fixed once the topic exists)",
    ),
    def(
        "transaction.state.log.replication.factor",
        I { min: 1 },
        Some("3"),
        "replication of __transaction_state (1 on a single node)",
    ),
    def(
        "transaction.state.log.segment.bytes",
        I { min: 14 },
        Some("104857600"),
        "segment size of __transaction_state",
    ),
    def(
        "transaction.state.log.min.isr",
        I { min: 1 },
        Some("2"),
        "min.insync.replicas of __transaction_state (capped by its replication)",
    ),
    def(
        "transaction.max.timeout.ms",
        I { min: 1 },
        Some("900000"),
        "largest transaction.timeout.ms a producer may ask for",
    ),
    def(
        "transactional.id.expiration.ms",
        I { min: 1 },
        Some("604800000"),
        "how long an idle transactional id is remembered",
    ),
    def(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        I { min: 1 },
        Some("10000"),
        "how often transactions past their timeout are looked for and aborted",
    ),
    def(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        I { min: 1 },
        Some("3600000"),
        "how often expired transactional ids are looked for",
    ),
    def(
        "offsets.retention.minutes",
        I { min: 1 },
        Some("10080"),
        "how long an empty group's committed offsets are kept",
    ),
    def(
        "offsets.retention.check.interval.ms",
        L { min: 1 },
        Some("600000"),
        "how often expired offsets are looked for",
    ),
    def(
        "offsets.commit.timeout.ms",
        I { min: 1 },
        Some("5000"),
        "how long an offset commit waits for every in-sync replica of its __consumer_offsets partition",
    ),
    def(
        "offset.metadata.max.bytes",
        I { min: 0 },
        Some("4096"),
        "largest metadata string of a committed offset",
    ),
    def(
        "group.initial.rebalance.delay.ms",
        I { min: 0 },
        Some("3000"),
        "how long a new group's first rebalance waits for more members",
    ),
    def(
        "group.min.session.timeout.ms",
        I { min: 0 },
        Some("6000"),
        "smallest session timeout a member may ask for",
    ),
    def(
        "group.max.session.timeout.ms",
        I { min: 0 },
        Some("1800000"),
        "largest session timeout a member may ask for",
    ),
    def(
        "group.max.size",
        I { min: 1 },
        Some("2147483647"),
        "most members of one group",
    ),
];

/// The definition of broker key `name`.
pub fn broker_config(name: &str) -> Option<&'static BrokerConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

/// An invalid broker configuration; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The broker's configuration: explicitly set keys plus typed accessors with defaults.
#[derive(Debug, Clone, Default)]
pub struct BrokerConfig {
    set: BTreeMap<String, String>,
    /// Keys given but not understood, kept to report them.
    pub unknown_keys: Vec<String>,
}

/// Parses Java-style `.properties` text: `key=value` or `key: value`, `#`/`!` comments.
pub fn parse_properties(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|l| {
            let idx = l.find(['=', ':'])?;
            Some((l[..idx].trim().to_string(), l[idx + 1..].trim().to_string()))
        })
        .collect()
}

impl BrokerConfig {
    /// Builds a config from `pairs` (file entries first, overrides last), validating each.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<BrokerConfig, ConfigError> {
        let mut config = BrokerConfig::default();
        for (k, v) in pairs {
            match broker_config(&k) {
                Some(d) => {
                    d.ty.validate(&v)
                        .map_err(|e| ConfigError(format!("invalid value for '{k}': {e}")))?;
                    config.set.insert(k, v.trim().to_string());
                }
                None => config.unknown_keys.push(k),
            }
        }
        if config.is_broker() {
            config.listener()?;
            config.advertised_listener()?;
        }
        let inter = config.get("inter.broker.listener.name").unwrap_or_default();
        if !inter.eq_ignore_ascii_case("PLAINTEXT") {
            return Err(ConfigError(format!(
                "invalid value for 'inter.broker.listener.name': '{inter}' (only PLAINTEXT is served)"
            )));
        }
        let selector = config.get("replica.selector.class").unwrap_or_default();
        if !selector.is_empty() && selector != RACK_AWARE_SELECTOR {
            return Err(ConfigError(format!(
                "invalid value for 'replica.selector.class': '{selector}' (empty or {RACK_AWARE_SELECTOR})"
            )));
        }
        Ok(config)
    }

    /// Sets one key after validation (used by tests and dynamic broker configs).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let d = broker_config(key)
            .ok_or_else(|| ConfigError(format!("unknown broker config '{key}'")))?;
        d.ty.validate(value)
            .map_err(|e| ConfigError(format!("invalid value for '{key}': {e}")))?;
        self.set.insert(key.to_string(), value.trim().to_string());
        Ok(())
    }

    /// The value of `key`: set explicitly, else its default.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.set
            .get(key)
            .map(String::as_str)
            .or_else(|| broker_config(key).and_then(|d| d.default))
    }

    /// Whether `key` was set explicitly (file or override).
    pub fn is_set(&self, key: &str) -> bool {
        self.set.contains_key(key)
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> T {
        self.get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("config {key} has a validated default"))
    }

    /// `broker.heartbeat.interval.ms`.
    pub fn heartbeat_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.num::<u64>("broker.heartbeat.interval.ms"))
    }

    /// How the controller elects leaders: `eligible.leader.replicas.version`, and the broker
    /// defaults of `min.insync.replicas` and `unclean.leader.election.enable`.
    pub fn election_defaults(&self) -> gregor_metadata::election::ElectionDefaults {
        gregor_metadata::election::ElectionDefaults {
            eligible_leader_replicas: self.eligible_leader_replicas(),
            min_insync_replicas: self.num("min.insync.replicas"),
            unclean_leader_election: self
                .get("unclean.leader.election.enable")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }

    /// How the active controller balances leadership: every
    /// `leader.imbalance.check.interval.seconds`, moving it back on brokers past
    /// `leader.imbalance.per.broker.percentage`; `None` with `auto.leader.rebalance.enable`
    /// off.
    pub fn leader_balance(&self) -> Option<(std::time::Duration, u32)> {
        let on = self
            .get("auto.leader.rebalance.enable")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        on.then(|| {
            (
                std::time::Duration::from_secs(self.num("leader.imbalance.check.interval.seconds")),
                self.num("leader.imbalance.per.broker.percentage"),
            )
        })
    }

    /// `leader.replication.throttled.rate` and `follower.replication.throttled.rate`
    /// (bytes/s; `replication_throttle::UNLIMITED` when not throttled).
    pub fn replication_throttle_rates(&self) -> (u64, u64) {
        (
            self.num("leader.replication.throttled.rate"),
            self.num("follower.replication.throttled.rate"),
        )
    }

    /// `metrics.listener` as an address to bind (`None`: off); `http://HOST:PORT`.
    pub fn metrics_listener(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let value = self.get("metrics.listener").unwrap_or_default();
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let addr = value
            .strip_prefix("http://")
            .unwrap_or(value)
            .trim_end_matches('/');
        use std::net::ToSocketAddrs;
        addr.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(Some)
            .ok_or_else(|| format!("metrics.listener '{value}' is not http://HOST:PORT"))
    }

    /// `eligible.leader.replicas.version` >= 1.
    pub fn eligible_leader_replicas(&self) -> bool {
        self.num::<u32>("eligible.leader.replicas.version") >= 1
    }

    /// `broker.session.timeout.ms`.
    pub fn session_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.num::<u64>("broker.session.timeout.ms"))
    }

    /// The followers' fetch settings (`num.replica.fetchers`, `replica.fetch.*`,
    /// `replica.socket.timeout.ms`).
    pub fn replica_fetch(&self) -> ReplicaFetchConfig {
        let ms = |k: &str| std::time::Duration::from_millis(self.num::<u64>(k));
        ReplicaFetchConfig {
            fetchers: self.num::<usize>("num.replica.fetchers").max(1),
            partition_max_bytes: self.num("replica.fetch.max.bytes"),
            response_max_bytes: self.num("replica.fetch.response.max.bytes"),
            min_bytes: self.num("replica.fetch.min.bytes"),
            max_wait_ms: self.num("replica.fetch.wait.max.ms"),
            backoff: ms("replica.fetch.backoff.ms"),
            socket_timeout: ms("replica.socket.timeout.ms"),
        }
    }

    /// `replica.lag.time.max.ms`.
    pub fn replica_lag_time_max_ms(&self) -> i64 {
        self.num("replica.lag.time.max.ms")
    }

    /// Whether `replica.selector.class` is the rack-aware selector (KIP-392); any other
    /// non-empty value is refused at start-up.
    pub fn rack_aware_replica_selector(&self) -> bool {
        !self
            .get("replica.selector.class")
            .unwrap_or_default()
            .is_empty()
    }

    /// `broker.rack`, if set (and not empty).
    pub fn rack(&self) -> Option<&str> {
        self.get("broker.rack").filter(|r| !r.is_empty())
    }

    pub fn node_id(&self) -> i32 {
        self.num("node.id")
    }
    pub fn num_partitions(&self) -> i32 {
        self.num("num.partitions")
    }
    pub fn default_replication_factor(&self) -> i16 {
        self.num::<i32>("default.replication.factor")
            .clamp(1, i16::MAX as i32) as i16
    }
    /// `fetch.zero.copy.enable`.
    pub fn zero_copy_fetch(&self) -> bool {
        self.get("fetch.zero.copy.enable")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
    pub fn auto_create_topics(&self) -> bool {
        self.get("auto.create.topics.enable")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
    pub fn socket_request_max_bytes(&self) -> usize {
        self.num::<i32>("socket.request.max.bytes") as usize
    }
    pub fn max_connections(&self) -> usize {
        self.num::<i32>("max.connections") as usize
    }
    pub fn log_dir(&self) -> PathBuf {
        let dirs = self
            .get("log.dirs")
            .filter(|_| self.is_set("log.dirs") || !self.is_set("log.dir"));
        let dirs = dirs
            .or_else(|| self.get("log.dir"))
            .unwrap_or("./gregor-data");
        PathBuf::from(dirs.split(',').next().unwrap_or(dirs).trim())
    }
    /// `log.open.files.max`, 0 resolved against the open-file limit `nofile`: half of it
    /// (the other half is for connections, checkpoints and index writes).
    pub fn open_files_max(&self, nofile: u64) -> usize {
        match self.num::<u64>("log.open.files.max") {
            0 => (nofile / 2).min(usize::MAX as u64) as usize,
            n => n.min(usize::MAX as u64) as usize,
        }
    }

    pub fn flush_scheduler_interval_ms(&self) -> u64 {
        self.num::<i64>("log.flush.scheduler.interval.ms").max(0) as u64
    }
    pub fn producer_id_expiration_ms(&self) -> i64 {
        self.num::<i32>("producer.id.expiration.ms") as i64
    }
    pub fn retention_check_interval_ms(&self) -> u64 {
        self.num::<i64>("log.retention.check.interval.ms").max(1) as u64
    }
    pub fn cleaner_enabled(&self) -> bool {
        self.get("log.cleaner.enable")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            && self.num::<i32>("log.cleaner.threads") > 0
    }
    pub fn cleaner_backoff_ms(&self) -> u64 {
        self.num::<i64>("log.cleaner.backoff.ms").max(0) as u64
    }
    pub fn cleaner_dedupe_buffer_bytes(&self) -> usize {
        self.num::<i64>("log.cleaner.dedupe.buffer.size").max(1024) as usize
    }
    pub fn checkpoint_interval_ms(&self) -> u64 {
        self.num::<i32>("log.flush.offset.checkpoint.interval.ms")
            .max(1) as u64
    }

    /// The group coordinator's settings.
    pub fn coordinator_config(&self) -> crate::group::config::CoordinatorConfig {
        crate::group::config::CoordinatorConfig {
            limits: crate::group::state::GroupLimits {
                min_session_timeout_ms: self.num("group.min.session.timeout.ms"),
                max_session_timeout_ms: self.num("group.max.session.timeout.ms"),
                max_size: self.num::<i32>("group.max.size") as usize,
                initial_rebalance_delay_ms: self.num::<i32>("group.initial.rebalance.delay.ms")
                    as i64,
            },
            offsets_partitions: self.num("offsets.topic.num.partitions"),
            offset_metadata_max_bytes: self.num::<i32>("offset.metadata.max.bytes") as usize,
            offsets_retention_ms: self.num::<i32>("offsets.retention.minutes") as i64 * 60_000,
            offsets_retention_check_interval_ms: self.num("offsets.retention.check.interval.ms"),
            offsets_commit_timeout_ms: self.num::<i32>("offsets.commit.timeout.ms") as u64,
        }
    }

    /// The transaction coordinator's settings.
    pub fn txn_config(&self) -> crate::txn::config::TxnConfig {
        crate::txn::config::TxnConfig {
            state_partitions: self.num("transaction.state.log.num.partitions"),
            max_timeout_ms: self.num("transaction.max.timeout.ms"),
            id_expiration_ms: self.num::<i32>("transactional.id.expiration.ms") as i64,
            abort_check_interval_ms: self
                .num::<i32>("transaction.abort.timed.out.transaction.cleanup.interval.ms")
                as i64,
            expiry_check_interval_ms: self
                .num::<i32>("transaction.remove.expired.transaction.cleanup.interval.ms")
                as i64,
        }
    }

    /// The client listener address (`PLAINTEXT://host:port`; the host must be an IP or
    /// localhost).
    /// Whether `process.roles` includes the broker role (a controller-only node serves no
    /// clients).
    pub fn is_broker(&self) -> bool {
        self.get("process.roles")
            .unwrap_or_default()
            .split(',')
            .any(|r| r.trim() == "broker")
    }

    /// Whether `listeners` has an entry besides the controller listener.
    pub fn has_client_listener(&self) -> bool {
        !client_entry(
            self.get("listeners").unwrap_or_default(),
            self.controller_listener_name(),
        )
        .is_empty()
    }

    pub fn listener(&self) -> Result<SocketAddr, ConfigError> {
        let raw = self.get("listeners").unwrap_or_default();
        parse_listener(client_entry(raw, self.controller_listener_name()))
            .map_err(|e| ConfigError(format!("invalid value for 'listeners': {e}")))
    }

    /// The advertised (host, port); `port 0` is replaced by the bound port by the caller.
    pub fn advertised_listener(&self) -> Result<(String, u16), ConfigError> {
        let raw = self
            .get("advertised.listeners")
            .or_else(|| self.get("listeners"))
            .unwrap_or_default();
        split_listener(client_entry(raw, self.controller_listener_name()))
            .map_err(|e| ConfigError(format!("invalid value for 'advertised.listeners': {e}")))
    }

    /// The name of the quorum's listener (`controller.listener.names`, first entry).
    pub fn controller_listener_name(&self) -> &str {
        self.get("controller.listener.names")
            .unwrap_or("CONTROLLER")
            .split(',')
            .next()
            .unwrap_or("CONTROLLER")
            .trim()
    }

    /// The address of the CONTROLLER entry of `listeners`, if there is one.
    pub fn controller_listener(&self) -> Result<Option<SocketAddr>, String> {
        let name = self.controller_listener_name();
        let prefix = format!("{name}://");
        self.get("listeners")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .find(|e| e.len() > prefix.len() && e[..prefix.len()].eq_ignore_ascii_case(&prefix))
            .map(|e| parse_listener(&format!("PLAINTEXT://{}", &e[prefix.len()..])))
            .transpose()
    }

    /// The broker-level value that is the default of topic key `topic_key`, if any.
    pub fn topic_default(&self, topic_key: &str) -> Option<String> {
        let ms_from =
            |ms: &str, minutes: Option<&str>, hours: &str, hour_ms: i64| -> Option<String> {
                if self.is_set(ms) {
                    return self.get(ms).map(str::to_string);
                }
                if let Some(m) = minutes.filter(|m| self.is_set(m)) {
                    return self
                        .get(m)
                        .and_then(|v| v.parse::<i64>().ok())
                        .map(|v| (v * 60_000).to_string());
                }
                let h: i64 = self.get(hours)?.parse().ok()?;
                Some(if h < 0 {
                    "-1".to_string()
                } else {
                    (h * hour_ms).to_string()
                })
            };
        match topic_key {
            "retention.ms" => ms_from(
                "log.retention.ms",
                Some("log.retention.minutes"),
                "log.retention.hours",
                3_600_000,
            ),
            "segment.ms" => ms_from("log.roll.ms", None, "log.roll.hours", 3_600_000),
            "flush.ms" => self
                .get("log.flush.interval.ms")
                .or_else(|| self.get("log.flush.scheduler.interval.ms"))
                .map(str::to_string),
            _ => {
                let def = TOPIC_CONFIGS.iter().find(|d| d.name == topic_key)?;
                self.get(def.broker_synonym?).map(str::to_string)
            }
        }
    }

    /// The storage settings of a topic with explicit settings `overrides`.
    pub fn log_config(&self, overrides: &BTreeMap<String, String>) -> LogConfig {
        let value = |key: &str| -> String {
            overrides
                .get(key)
                .cloned()
                .or_else(|| self.topic_default(key))
                .or_else(|| {
                    TOPIC_CONFIGS
                        .iter()
                        .find(|d| d.name == key)
                        .map(|d| d.default.to_string())
                })
                .expect("every topic key has a default")
        };
        let num = |key: &str| -> u64 {
            value(key)
                .trim()
                .parse::<i64>()
                .map(|v| v.max(0) as u64)
                .unwrap_or(u64::MAX)
        };
        let signed = |key: &str| -> i64 { value(key).trim().parse::<i64>().unwrap_or(-1) };
        let policy: Vec<String> = value("cleanup.policy")
            .split(',')
            .map(|p| p.trim().to_string())
            .collect();
        LogConfig {
            segment_bytes: num("segment.bytes"),
            segment_ms: num("segment.ms"),
            index_interval_bytes: num("index.interval.bytes"),
            flush_interval_messages: num("flush.messages"),
            flush_interval_ms: num("flush.ms"),
            max_message_bytes: num("max.message.bytes"),
            timestamp_type: if value("message.timestamp.type") == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            retention_ms: signed("retention.ms"),
            retention_bytes: signed("retention.bytes"),
            file_delete_delay_ms: num("file.delete.delay.ms"),
            cleanup_delete: policy.iter().any(|p| p == "delete"),
            cleanup_compact: policy.iter().any(|p| p == "compact"),
            delete_retention_ms: num("delete.retention.ms"),
            min_compaction_lag_ms: num("min.compaction.lag.ms"),
            max_compaction_lag_ms: num("max.compaction.lag.ms"),
            min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .unwrap_or(0.5),
        }
    }

    /// Explicitly set keys, for DescribeConfigs.
    pub fn explicit(&self) -> &BTreeMap<String, String> {
        &self.set
    }
}

/// The first entry of a listener list that is not the controller listener `controller`.
fn client_entry<'a>(raw: &'a str, controller: &str) -> &'a str {
    let prefix = format!("{controller}://");
    raw.split(',')
        .map(str::trim)
        .find(|e| !(e.len() >= prefix.len() && e[..prefix.len()].eq_ignore_ascii_case(&prefix)))
        .unwrap_or("")
}

fn split_listener(raw: &str) -> Result<(String, u16), String> {
    let first = raw.split(',').next().unwrap_or("").trim();
    let rest = first
        .split_once("://")
        .map(|(proto, rest)| {
            if proto.eq_ignore_ascii_case("PLAINTEXT") {
                Ok(rest)
            } else {
                Err(format!(
                    "listener '{first}': only PLAINTEXT listeners are supported"
                ))
            }
        })
        .unwrap_or(Ok(first))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("listener '{first}' has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("listener '{first}' has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok((host.to_string(), port))
}

fn parse_listener(raw: &str) -> Result<SocketAddr, String> {
    let (host, port) = split_listener(raw)?;
    let ip = if host == "localhost" {
        "127.0.0.1"
    } else {
        host.as_str()
    };
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("host '{host}' is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let c = BrokerConfig::from_pairs(pairs(&[
            ("log.segment.bytes", "2048"),
            ("whatever.key", "1"),
        ]))
        .unwrap();
        assert_eq!(c.node_id(), 1);
        assert_eq!(c.listener().unwrap().to_string(), "127.0.0.1:9092");
        assert_eq!(c.unknown_keys, vec!["whatever.key"]);
        let log = c.log_config(&BTreeMap::new());
        assert_eq!(log.segment_bytes, 2048);
        assert_eq!(log.segment_ms, 168 * 3_600_000);
        let mut o = BTreeMap::new();
        o.insert("segment.bytes".to_string(), "4096".to_string());
        assert_eq!(c.log_config(&o).segment_bytes, 4096);
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = BrokerConfig::from_pairs(pairs(&[("num.partitions", "zero")])).unwrap_err();
        assert!(e.0.contains("num.partitions"), "{e}");
        let e = BrokerConfig::from_pairs(pairs(&[("listeners", "SSL://1.2.3.4:1")])).unwrap_err();
        assert!(e.0.contains("listeners"), "{e}");
    }

    #[test]
    fn properties_parse() {
        let p = parse_properties("# c\nnode.id=3\n  log.dirs : /tmp/x \n\n!x\n");
        assert_eq!(p, pairs(&[("node.id", "3"), ("log.dirs", "/tmp/x")]));
    }

    #[test]
    fn retention_synonyms() {
        let c = BrokerConfig::from_pairs(pairs(&[("log.retention.minutes", "2")])).unwrap();
        assert_eq!(c.topic_default("retention.ms").as_deref(), Some("120000"));
        let c = BrokerConfig::from_pairs(pairs(&[("log.retention.ms", "5")])).unwrap();
        assert_eq!(c.topic_default("retention.ms").as_deref(), Some("5"));
    }
}
