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
pub struct DelayedLabel {
    pub delayed_operation: String,
}

/// A request waiting in a purgatory, counted in its size while this lives.
pub struct Waiting(Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
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
}

/// One topic's counters, looked up by name without allocating.
#[derive(Clone)]
struct TopicCounters {
    messages_in: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
}

/// One API's request counter and time histogram, by API key.
struct ApiSeries {
    key: i16,
    requests: Counter,
    time: Histogram,
}

/// Every series this broker exports.
pub struct BrokerMetrics {
    registry: Registry,
    messages_in: Family<TopicLabel, Counter>,
    bytes_in: Family<TopicLabel, Counter>,
    bytes_out: Family<TopicLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    /// Handles into the families above, so the request path neither allocates labels nor
    /// hashes them twice: per API (fixed at start), per topic (added on first use).
    apis: Vec<ApiSeries>,
    topics: RwLock<HashMap<String, TopicCounters>>,
    isr_shrinks: Counter,
    isr_expands: Counter,
    /// Requests waiting: acks=all produces for replication, fetches for records.
    produce_purgatory: Gauge,
    fetch_purgatory: Gauge,
    connections_created: Counter,
    state: StateGauges,
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
        let requests = Family::<RequestLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let request_time =
            Family::<RequestLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                request_histogram,
            );
        let state = StateGauges::default();
        let apis = gregor_protocol::versions::SUPPORTED
            .iter()
            .map(|r| {
                let label = RequestLabel {
                    request: format!("{:?}", r.key),
                };
                ApiSeries {
                    key: r.key as i16,
                    requests: requests.get_or_create(&label).clone(),
                    time: request_time.get_or_create(&label).clone(),
                }
            })
            .collect();
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
            requests.clone(),
        );
        registry.register(
            "kafka_network_requestmetrics_errors",
            "Partition and request errors answered, per API and Kafka error (ErrorsPerSec)",
            errors.clone(),
        );
        registry.register_with_unit(
            "kafka_network_requestmetrics_total_time",
            "Time from a decoded request to its encoded response, per API (TotalTimeMs)",
            Unit::Seconds,
            request_time.clone(),
        );
        let g = &state;
        let gauges: [(&str, &str, &Gauge); 10] = [
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
            apis,
            topics: RwLock::default(),
            isr_shrinks,
            isr_expands,
            produce_purgatory,
            fetch_purgatory,
            connections_created,
            state,
            per_partition: std::sync::atomic::AtomicBool::new(true),
            scraping: std::sync::Mutex::new(()),
        }
    }
}

impl BrokerMetrics {
    /// A request of API `key` answered after `took`.
    pub fn request(&self, key: ApiKey, took: Duration) {
        if let Some(a) = self.apis.iter().find(|a| a.key == key as i16) {
            a.requests.inc();
            a.time.observe(took.as_secs_f64());
        }
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
        self.produce_purgatory.inc();
        Waiting(self.produce_purgatory.clone())
    }

    /// A fetch starts waiting for records (until the guard drops).
    pub fn fetch_waiting(&self) -> Waiting {
        self.fetch_purgatory.inc();
        Waiting(self.fetch_purgatory.clone())
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

    fn refresh_coordinators(&self, broker: &Broker) {
        let g = &self.state;
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
