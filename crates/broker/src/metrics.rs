//! The broker's Prometheus metrics, named after the Kafka JMX metrics operators already
//! alert on (`kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec` becomes
//! `kafka_server_brokertopicmetrics_messages_in_total`; the mapping is in
//! `docs/operations.md`). Built on the Prometheus project's `prometheus-client` crate, which
//! keeps the series and writes the OpenMetrics text format.
//!
//! Counters and histograms are updated on the request path (atomic adds behind a read lock
//! per label set); the state gauges (partitions, leaders, under-replicated, controller, the
//! process) are computed from the broker's state when scraped ([`BrokerMetrics::render`]),
//! so they cost nothing in between.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::broker::Broker;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// The API name, as Kafka's `request` tag (`Produce`, `Fetch`, ...).
    pub request: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub request: String,
    /// The Kafka error name (`NOT_LEADER_OR_FOLLOWER`).
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabel {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DelayedLabel {
    pub delayed_operation: String,
}

/// A request waiting in a purgatory, counted in its size while this lives; its lifetime is
/// the request's remote time.
pub struct Waiting {
    size: Gauge,
    since: std::time::Instant,
}

impl Waiting {
    fn start(size: &Gauge) -> Waiting {
        size.inc();
        Waiting {
            size: size.clone(),
            since: std::time::Instant::now(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.size.dec();
        let waited = self.since.elapsed();
        // Outside a request (no scope) nothing is attributed.
        let _ = REMOTE_TIME.try_with(|c| c.set(c.get() + waited));
    }
}

/// Gauges set from the broker's state at each scrape.
#[derive(Default)]
struct StateGauges {
    partitions: Gauge,
    leaders: Gauge,
    under_replicated: Gauge,
    under_min_isr: Gauge,
    active_controller: Gauge,
    offline_partitions: Gauge,
    fenced_brokers: Gauge,
    preferred_imbalance: Gauge,
    metadata_applied_offset: Gauge,
    offline_replicas: Gauge,
    /// Partitions whose preferred leader is this broker, led by another.
    preferred_here_led_elsewhere: Gauge,
    /// The largest follower lag of the partitions this broker follows.
    fetcher_max_lag: Gauge,
    raft_epoch: Gauge,
    raft_leader: Gauge,
    raft_log_end: Gauge,
    raft_applied: Gauge,
    open_fds: Gauge,
    resident_memory: Gauge,
    /// A counter (Prometheus' `process_cpu_seconds_total`), moved up to /proc's value at
    /// each scrape.
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    connections: Gauge,
    groups: Family<StateLabel, Gauge>,
    transactions: Family<StateLabel, Gauge>,
    log_size: Family<PartitionLabel, Gauge>,
    log_segments: Family<PartitionLabel, Gauge>,
    consumer_lag: Family<LagLabel, Gauge>,
    follower_lag: Family<PartitionLabel, Gauge>,
    /// On the active controller: each other node's entries behind the metadata log's end.
    raft_replica_lag: Family<NodeLabel, Gauge>,
    /// Rebalances completed, moved up to the group coordinator's count at each scrape.
    rebalances: Counter,
}

/// One topic's counters, looked up by name without allocating.
#[derive(Clone)]
struct TopicCounters {
    messages_in: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

/// One API's request counter and time histograms.
struct ApiSeries {
    requests: Counter,
    total: Histogram,
    queue: Histogram,
    local: Histogram,
    remote: Histogram,
    send: Histogram,
}

/// Where a request's time went, as Kafka splits `TotalTimeMs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestTimes {
    /// From the frame's arrival to its handler starting: waiting behind the connection's
    /// earlier requests, and decoding (`RequestQueueTimeMs`).
    pub queue: Duration,
    /// In the handler, not waiting in a purgatory (`LocalTimeMs`).
    pub local: Duration,
    /// Waiting in a purgatory: acks=all for the ISR, a fetch for min.bytes
    /// (`RemoteTimeMs`).
    pub remote: Duration,
    /// Writing the response to the socket (`ResponseSendTimeMs`).
    pub send: Duration,
}

/// The histogram families of request times, one series per API once it is used.
struct RequestTimeFamilies {
    requests: Family<RequestLabel, Counter>,
    total: TimeFamily,
    queue: TimeFamily,
    local: TimeFamily,
    remote: TimeFamily,
    send: TimeFamily,
}

type TimeFamily = Family<RequestLabel, Histogram, fn() -> Histogram>;

fn time_family() -> TimeFamily {
    Family::new_with_constructor(request_histogram)
}

/// How long controller operations waited for the controller and ran under it.
#[derive(Clone)]
pub struct ControllerTimes {
    queue: Histogram,
    processing: Histogram,
}

impl Default for ControllerTimes {
    fn default() -> ControllerTimes {
        ControllerTimes {
            queue: request_histogram(),
            processing: request_histogram(),
        }
    }
}

impl ControllerTimes {
    pub fn queued(&self, waited: Duration) {
        self.queue.observe(waited.as_secs_f64());
    }
    pub fn processed(&self, took: Duration) {
        self.processing.observe(took.as_secs_f64());
    }
}

/// Segment flushes of this process (every broker in it), as the storage crate reports
/// them.
static FLUSH_TIME: std::sync::LazyLock<Histogram> = std::sync::LazyLock::new(request_histogram);

fn observe_flush(took: Duration) {
    FLUSH_TIME.observe(took.as_secs_f64());
}

tokio::task_local! {
    /// Purgatory time of the request the current task serves.
    static REMOTE_TIME: std::cell::Cell<Duration>;
}

/// Runs `f` (a request's handler), returning its output and the time it waited in
/// purgatories (the [`Waiting`] guards it held).
pub async fn with_remote_time<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    REMOTE_TIME
        .scope(std::cell::Cell::new(Duration::ZERO), async {
            let out = f.await;
            (out, REMOTE_TIME.with(|c| c.get()))
        })
        .await
}

/// Every series this broker exports.
pub struct BrokerMetrics {
    registry: Registry,
    messages_in: Family<TopicLabel, Counter>,
    bytes_in: Family<TopicLabel, Counter>,
    bytes_out: Family<TopicLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    request_times: RequestTimeFamilies,
    /// Handles into the families above, so the request path neither allocates labels nor
    /// hashes them twice: per API key (made on first use), per topic (added on first use).
    apis: Vec<std::sync::OnceLock<ApiSeries>>,
    topics: RwLock<HashMap<String, TopicCounters>>,
    isr_shrinks: Counter,
    isr_expands: Counter,
    /// Requests waiting: acks=all produces for replication, fetches for records.
    produce_purgatory: Gauge,
    fetch_purgatory: Gauge,
    connections_created: Counter,
    controller_times: ControllerTimes,
    retention_deleted_segments: Counter,
    clean_time: Histogram,
    state: StateGauges,
    /// Whether the request path counts at all: off when no endpoint serves the series
    /// (`metrics.listener` empty), so a broker without metrics pays nothing for them.
    counting: std::sync::atomic::AtomicBool,
    /// Whether the per-partition series (log size and segments, consumer lag) are kept
    /// (`metrics.partition.series.enable`).
    per_partition: std::sync::atomic::AtomicBool,
    /// One scrape at a time: the labelled state gauges are cleared and refilled.
    scraping: std::sync::Mutex<()>,
}

fn request_histogram() -> Histogram {
    // 50 µs .. ~26 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

impl Default for BrokerMetrics {
    fn default() -> BrokerMetrics {
        let mut registry = Registry::default();
        let messages_in = Family::<TopicLabel, Counter>::default();
        let bytes_in = Family::<TopicLabel, Counter>::default();
        let bytes_out = Family::<TopicLabel, Counter>::default();
        let request_times = RequestTimeFamilies {
            requests: Family::default(),
            total: time_family(),
            queue: time_family(),
            local: time_family(),
            remote: time_family(),
            send: time_family(),
        };
        let errors = Family::<ErrorLabel, Counter>::default();
        let state = StateGauges::default();
        let max_key = gregor_protocol::versions::SUPPORTED
            .iter()
            .map(|r| r.key as i16)
            .max()
            .unwrap_or(0);
        let apis = (0..=max_key).map(|_| std::sync::OnceLock::new()).collect();
        registry.register(
            "kafka_server_brokertopicmetrics_messages_in",
            "Records appended by producers, per topic (MessagesInPerSec)",
            messages_in.clone(),
        );
        registry.register_with_unit(
            "kafka_server_brokertopicmetrics_bytes_in",
            "Record bytes appended by producers, per topic (BytesInPerSec)",
            Unit::Bytes,
            bytes_in.clone(),
        );
        registry.register_with_unit(
            "kafka_server_brokertopicmetrics_bytes_out",
            "Record bytes sent to consumers and followers, per topic (BytesOutPerSec)",
            Unit::Bytes,
            bytes_out.clone(),
        );
        registry.register(
            "kafka_network_requestmetrics_requests",
            "Requests answered, per API (RequestsPerSec)",
            request_times.requests.clone(),
        );
        registry.register(
            "kafka_network_requestmetrics_errors",
            "Partition and request errors answered, per API and Kafka error (ErrorsPerSec)",
            errors.clone(),
        );
        let times: [(&str, &str, &TimeFamily); 5] = [
            ("kafka_network_requestmetrics_total_time", "Time from a request's arrival to its response written, per API (TotalTimeMs)", &request_times.total),
            ("kafka_network_requestmetrics_request_queue_time", "Time from a request's arrival to its handler: behind the connection's earlier requests, and decoding (RequestQueueTimeMs)", &request_times.queue),
            ("kafka_network_requestmetrics_local_time", "Time in the request's handler, purgatories excepted (LocalTimeMs)", &request_times.local),
            ("kafka_network_requestmetrics_remote_time", "Time in a purgatory: acks=all waiting for the ISR, a fetch for min.bytes (RemoteTimeMs)", &request_times.remote),
            ("kafka_network_requestmetrics_response_send_time", "Time writing the response to the socket (ResponseSendTimeMs)", &request_times.send),
        ];
        for (name, help, family) in times {
            registry.register_with_unit(name, help, Unit::Seconds, family.clone());
        }
        let g = &state;
        let gauges: [(&str, &str, &Gauge); 17] = [
            ("kafka_server_replicamanager_partitions", "Partitions hosted here (PartitionCount)", &g.partitions),
            ("kafka_server_replicamanager_leaders", "Partitions led here (LeaderCount)", &g.leaders),
            ("kafka_server_replicamanager_under_replicated_partitions", "Led partitions whose ISR is smaller than their replicas (UnderReplicatedPartitions)", &g.under_replicated),
            ("kafka_server_replicamanager_under_min_isr_partitions", "Led partitions whose ISR is below min.insync.replicas (UnderMinIsrPartitionCount)", &g.under_min_isr),
            ("kafka_controller_kafkacontroller_active_controllers", "1 on the active controller (ActiveControllerCount)", &g.active_controller),
            ("kafka_controller_kafkacontroller_offline_partitions", "Partitions without a leader, on the active controller (OfflinePartitionsCount)", &g.offline_partitions),
            ("kafka_controller_kafkacontroller_fenced_brokers", "Registered brokers that are fenced, on the active controller (FencedBrokerCount)", &g.fenced_brokers),
            ("kafka_controller_kafkacontroller_preferred_replica_imbalance", "Partitions led by another replica than their preferred one, on the active controller (PreferredReplicaImbalanceCount)", &g.preferred_imbalance),
            ("kafka_server_metadata_last_applied_offset", "Offset of the last metadata record this broker applied (last-applied-record-offset)", &g.metadata_applied_offset),
            ("process_open_fds", "Open file descriptors", &g.open_fds),
            ("kafka_server_replicamanager_offline_replicas", "Replicas placed here that could not be opened: offline here, retried (OfflineReplicaCount)", &g.offline_replicas),
            ("kafka_server_replicamanager_preferred_leader_elsewhere", "Partitions whose preferred leader is this broker but that another replica leads (this broker's part of the preferred-replica imbalance)", &g.preferred_here_led_elsewhere),
            ("kafka_server_replicafetchermanager_max_lag", "Largest lag of a partition this broker follows, in records behind the leader's high watermark (MaxLag)", &g.fetcher_max_lag),
            ("kafka_server_raft_metrics_current_epoch", "The metadata quorum's epoch (Raft term) as this node knows it (current-epoch)", &g.raft_epoch),
            ("kafka_server_raft_metrics_current_leader", "The active controller's node id, -1 when none is known (current-leader)", &g.raft_leader),
            ("kafka_server_raft_metrics_log_end_offset", "Index of this node's last metadata log entry (log-end-offset)", &g.raft_log_end),
            ("kafka_server_raft_metrics_applied_offset", "Index of the last metadata log entry applied on this node", &g.raft_applied),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let isr_shrinks = Counter::default();
        let isr_expands = Counter::default();
        let connections_created = Counter::default();
        registry.register(
            "kafka_server_replicamanager_isr_shrinks",
            "ISR shrinks of partitions led here, accepted by the controller (IsrShrinksPerSec)",
            isr_shrinks.clone(),
        );
        registry.register(
            "kafka_server_replicamanager_isr_expands",
            "ISR expansions of partitions led here, accepted by the controller (IsrExpandsPerSec)",
            isr_expands.clone(),
        );
        let purgatory = Family::<DelayedLabel, Gauge>::default();
        let produce_purgatory = purgatory
            .get_or_create(&DelayedLabel {
                delayed_operation: "Produce".into(),
            })
            .clone();
        let fetch_purgatory = purgatory
            .get_or_create(&DelayedLabel {
                delayed_operation: "Fetch".into(),
            })
            .clone();
        registry.register(
            "kafka_server_delayedoperationpurgatory_purgatory_size",
            "Requests waiting: acks=all produces for the ISR, fetches for min.bytes (PurgatorySize)",
            purgatory,
        );
        registry.register(
            "kafka_server_socketservermetrics_connection_creation",
            "Client connections accepted (connection-creation-total)",
            connections_created.clone(),
        );
        registry.register(
            "kafka_server_socketservermetrics_connections",
            "Client connections open (connection-count)",
            state.connections.clone(),
        );
        registry.register(
            "kafka_coordinator_group_groupmetadatamanager_groups",
            "Consumer groups this broker coordinates, by state (NumGroups<State>)",
            state.groups.clone(),
        );
        registry.register(
            "kafka_coordinator_transaction_transactions",
            "Transactional ids this broker coordinates, by state",
            state.transactions.clone(),
        );
        registry.register_with_unit(
            "kafka_log_log_size",
            "Bytes of a partition's log hosted here (kafka.log:type=Log,name=Size)",
            Unit::Bytes,
            state.log_size.clone(),
        );
        registry.register(
            "kafka_log_log_segments",
            "Segments of a partition's log hosted here (NumLogSegments)",
            state.log_segments.clone(),
        );
        registry.register(
            "kafka_consumergroup_lag",
            "Records between a group's committed offset and the high watermark, for groups coordinated and partitions hosted here (as kafka-exporter)",
            state.consumer_lag.clone(),
        );
        registry.register(
            "kafka_server_fetcherlagmetrics_consumer_lag",
            "Records a partition this broker follows is behind the leader's high watermark (FetcherLagMetrics ConsumerLag)",
            state.follower_lag.clone(),
        );
        registry.register(
            "kafka_server_raft_metrics_replica_lag",
            "On the active controller: metadata log entries each other node is behind this one's end",
            state.raft_replica_lag.clone(),
        );
        registry.register(
            "kafka_coordinator_group_groupmetadatamanager_rebalances",
            "Rebalances of groups coordinated here that completed: a join phase ended in a new generation (classic-group-completed-rebalance-count)",
            state.rebalances.clone(),
        );
        let controller_times = ControllerTimes::default();
        registry.register_with_unit(
            "kafka_controller_controllereventmanager_event_queue_time",
            "Time a controller operation (forwarded request, registration, heartbeat, AlterPartition) waited for the controller (EventQueueTimeMs)",
            Unit::Seconds,
            controller_times.queue.clone(),
        );
        registry.register_with_unit(
            "kafka_controller_controllereventmanager_event_queue_processing_time",
            "Time a controller operation ran (EventQueueProcessingTimeMs)",
            Unit::Seconds,
            controller_times.processing.clone(),
        );
        gregor_storage::flush_stats::set_observer(observe_flush);
        registry.register_with_unit(
            "kafka_log_logflushstats_log_flush",
            "Time of each segment flush (fsync of a segment's log and indexes) in this process (LogFlushRateAndTimeMs)",
            Unit::Seconds,
            FLUSH_TIME.clone(),
        );
        let retention_deleted_segments = Counter::default();
        registry.register(
            "kafka_log_logmanager_retention_deleted_segments",
            "Segments deleted by retention (time, size or log start offset)",
            retention_deleted_segments.clone(),
        );
        let clean_time = request_histogram();
        registry.register_with_unit(
            "kafka_log_logcleaner_clean_time",
            "Time of each log cleaner pass that compacted a partition (behind max-clean-time-secs)",
            Unit::Seconds,
            clean_time.clone(),
        );
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory",
            Unit::Bytes,
            state.resident_memory.clone(),
        );
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time",
            Unit::Seconds,
            state.cpu_seconds.clone(),
        );
        BrokerMetrics {
            registry,
            messages_in,
            bytes_in,
            bytes_out,
            errors,
            request_times,
            apis,
            topics: RwLock::default(),
            isr_shrinks,
            isr_expands,
            produce_purgatory,
            fetch_purgatory,
            connections_created,
            controller_times,
            retention_deleted_segments,
            clean_time,
            state,
            counting: std::sync::atomic::AtomicBool::new(true),
            per_partition: std::sync::atomic::AtomicBool::new(true),
            scraping: std::sync::Mutex::new(()),
        }
    }
}

impl BrokerMetrics {
    /// A request of API `key` answered, its time spent as `t` says.
    pub fn request(&self, key: ApiKey, t: &RequestTimes) {
        let Some(cell) = self.apis.get(key as i16 as usize) else {
            return;
        };
        let a = cell.get_or_init(|| {
            let label = RequestLabel {
                request: format!("{key:?}"),
            };
            let f = &self.request_times;
            ApiSeries {
                requests: f.requests.get_or_create(&label).clone(),
                total: f.total.get_or_create(&label).clone(),
                queue: f.queue.get_or_create(&label).clone(),
                local: f.local.get_or_create(&label).clone(),
                remote: f.remote.get_or_create(&label).clone(),
                send: f.send.get_or_create(&label).clone(),
            }
        });
        a.requests.inc();
        let total = t.queue + t.local + t.remote + t.send;
        a.total.observe(total.as_secs_f64());
        a.queue.observe(t.queue.as_secs_f64());
        a.local.observe(t.local.as_secs_f64());
        a.remote.observe(t.remote.as_secs_f64());
        a.send.observe(t.send.as_secs_f64());
    }

    /// An error `code` answered to a request of API `key` (one per partition it applies
    /// to).
    pub fn error(&self, key: ApiKey, code: i16) {
        self.errors
            .get_or_create(&ErrorLabel {
                request: format!("{key:?}"),
                error: gregor_protocol::errors::code_name(code),
            })
            .inc();
    }

    /// `records` records of `bytes` bytes appended by a producer to `topic`.
    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        if !self.counting() {
            return;
        }
        self.with_topic(topic, |c| {
            c.messages_in.inc_by(records);
            c.bytes_in.inc_by(bytes);
        });
    }

    /// `bytes` record bytes of `topic` sent in a fetch response.
    pub fn fetched(&self, topic: &str, bytes: u64) {
        if bytes > 0 {
            self.with_topic(topic, |c| {
                c.bytes_out.inc_by(bytes);
            });
        }
    }

    fn with_topic(&self, topic: &str, f: impl FnOnce(&TopicCounters)) {
        if let Some(c) = self.topics.read().expect("metrics poisoned").get(topic) {
            return f(c);
        }
        let label = TopicLabel {
            topic: topic.to_string(),
        };
        let c = TopicCounters {
            messages_in: self.messages_in.get_or_create(&label).clone(),
            bytes_in: self.bytes_in.get_or_create(&label).clone(),
            bytes_out: self.bytes_out.get_or_create(&label).clone(),
        };
        f(&c);
        self.topics
            .write()
            .expect("metrics poisoned")
            .insert(topic.to_string(), c);
    }

    /// An ISR change the controller accepted: from `before` members to `after`.
    pub fn isr_changed(&self, before: usize, after: usize) {
        if after < before {
            self.isr_shrinks.inc();
        } else if after > before {
            self.isr_expands.inc();
        }
    }

    /// An acks=all produce starts waiting for replication (until the guard drops).
    pub fn produce_waiting(&self) -> Waiting {
        Waiting::start(&self.produce_purgatory)
    }

    /// A fetch starts waiting for records (until the guard drops).
    pub fn fetch_waiting(&self) -> Waiting {
        Waiting::start(&self.fetch_purgatory)
    }

    /// A client connection opened (`true`) or closed.
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_created.inc();
            self.state.connections.inc();
        } else {
            self.state.connections.dec();
        }
    }

    /// The histograms the controller's lock times operations into.
    pub fn controller_times(&self) -> ControllerTimes {
        self.controller_times.clone()
    }

    /// Retention deleted `segments` segments of a partition.
    pub fn retention_deleted(&self, segments: usize) {
        self.retention_deleted_segments.inc_by(segments as u64);
    }

    /// A log cleaner pass compacted a partition in `took`.
    pub fn cleaned(&self, took: Duration) {
        self.clean_time.observe(took.as_secs_f64());
    }

    /// Count on the request path (or not).
    pub fn set_counting(&self, on: bool) {
        self.counting
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the request path counts.
    pub fn counting(&self) -> bool {
        self.counting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keep (or drop) the per-partition series.
    pub fn set_per_partition(&self, on: bool) {
        self.per_partition
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The OpenMetrics text of every series, the state gauges computed from `broker` now.
    pub fn render(&self, broker: &Broker) -> String {
        let _one = self.scraping.lock().expect("metrics poisoned");
        self.refresh(broker);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    fn refresh(&self, broker: &Broker) {
        let g = &self.state;
        let image = broker.image();
        let hosted = broker.replicas.all();
        let mut min_isr: BTreeMap<String, usize> = BTreeMap::new();
        let (mut leaders, mut under, mut under_min) = (0, 0, 0);
        for p in &hosted {
            let state = p.state();
            if state.leader != broker.node_id {
                continue;
            }
            leaders += 1;
            if state.isr.len() < state.replicas.len() {
                under += 1;
            }
            let min = *min_isr.entry(p.topic.clone()).or_insert_with(|| {
                broker
                    .topic_config_value(&p.topic, "min.insync.replicas")
                    .parse()
                    .unwrap_or(1)
            });
            if state.isr.len() < min.min(state.replicas.len()) {
                under_min += 1;
            }
        }
        g.partitions.set(hosted.len() as i64);
        g.offline_replicas
            .set(broker.replicas.offline().len() as i64);
        g.leaders.set(leaders);
        g.under_replicated.set(under);
        g.under_min_isr.set(under_min);
        let active = broker.seat().leader() == Some(broker.node_id);
        g.active_controller.set(i64::from(active));
        let all = || image.topics.values().flat_map(|t| t.partitions.values());
        let (offline, imbalance, fenced) = if active {
            (
                all().filter(|p| p.leader == -1).count() as i64,
                all().filter(|p| p.leader != p.replicas[0]).count() as i64,
                image.brokers.values().filter(|b| b.fenced).count() as i64,
            )
        } else {
            (0, 0, 0)
        };
        g.offline_partitions.set(offline);
        g.preferred_imbalance.set(imbalance);
        g.fenced_brokers.set(fenced);
        g.metadata_applied_offset.set(image.offset);
        g.preferred_here_led_elsewhere.set(
            all()
                .filter(|p| {
                    p.replicas.first() == Some(&broker.node_id) && p.leader != broker.node_id
                })
                .count() as i64,
        );
        g.fetcher_max_lag.set(
            hosted
                .iter()
                .filter(|p| !p.is_leader())
                .map(|p| p.follower_lag())
                .max()
                .unwrap_or(0),
        );
        self.refresh_quorum(broker);
        self.refresh_coordinators(broker);
        self.refresh_partitions(broker, &hosted);
        let process = crate::process_stats::read();
        g.open_fds.set(process.open_fds as i64);
        g.resident_memory.set(process.resident_bytes as i64);
        let behind = process.cpu_seconds - g.cpu_seconds.get();
        if behind > 0.0 {
            g.cpu_seconds.inc_by(behind);
        }
    }

    fn refresh_quorum(&self, broker: &Broker) {
        let g = &self.state;
        g.raft_replica_lag.clear();
        let Some(status) = broker.seat().status() else {
            return;
        };
        g.raft_epoch.set(status.epoch as i64);
        g.raft_leader.set(i64::from(status.leader.unwrap_or(-1)));
        let index = |i: Option<u64>| i.map_or(-1, |i| i as i64);
        let end = index(status.last_index);
        g.raft_log_end.set(end);
        g.raft_applied.set(index(status.applied_index));
        for (node, replicated) in &status.replication {
            if *node != broker.node_id {
                g.raft_replica_lag
                    .get_or_create(&NodeLabel { node: *node })
                    .set((end - index(*replicated)).max(0));
            }
        }
    }

    fn refresh_coordinators(&self, broker: &Broker) {
        let g = &self.state;
        let behind = broker.groups.rebalances() - g.rebalances.get();
        if behind > 0 {
            g.rebalances.inc_by(behind);
        }
        g.groups.clear();
        for (_, _, state) in broker.groups.list(&[]) {
            g.groups
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .inc();
        }
        g.transactions.clear();
        for t in broker.txns.all() {
            g.transactions
                .get_or_create(&StateLabel {
                    state: t.status.name().to_string(),
                })
                .inc();
        }
    }

    fn refresh_partitions(
        &self,
        broker: &Broker,
        hosted: &[std::sync::Arc<crate::partition::Partition>],
    ) {
        let g = &self.state;
        g.log_size.clear();
        g.log_segments.clear();
        g.consumer_lag.clear();
        g.follower_lag.clear();
        if !self
            .per_partition
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let mut high_watermarks = HashMap::new();
        for p in hosted {
            let label = PartitionLabel {
                topic: p.topic.clone(),
                partition: p.index,
            };
            let (size, segments) = p.with_log(|log| (log.size_bytes(), log.segment_count()));
            g.log_size.get_or_create(&label).set(size as i64);
            g.log_segments.get_or_create(&label).set(segments as i64);
            if !p.is_leader() {
                g.follower_lag.get_or_create(&label).set(p.follower_lag());
            }
            high_watermarks.insert((p.topic.clone(), p.index), p.high_watermark());
        }
        for (group, _, _) in broker.groups.list(&[]) {
            let Ok(offsets) = broker.groups.fetch_offsets(&group, None) else {
                continue;
            };
            for (topic, partition, committed) in offsets {
                let Some(&hw) = high_watermarks.get(&(topic.clone(), partition)) else {
                    continue;
                };
                if committed.offset >= 0 {
                    g.consumer_lag
                        .get_or_create(&LagLabel {
                            group: group.clone(),
                            topic,
                            partition,
                        })
                        .set((hw - committed.offset).max(0));
                }
            }
        }
    }
}
