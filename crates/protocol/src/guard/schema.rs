//! Wire layouts of the requests the guard understands, one field per line.
//!
//! A message is a list of [`Field`]s; a field is present in the versions `min..=max` and is
//! either a regular field (in order) or, with a tag, a tagged field of the struct's tagged
//! section (flexible versions only). Whether strings, bytes and arrays use the compact
//! encoding, and whether structs end with a tagged section, follows from the message's first
//! flexible version ([`ApiSchema::flexible_from`]). Nullability is not described: the guard
//! accepts null everywhere, which is harmless (the codec rejects nulls it cannot store).
//!
//! Adding an api is a few lines: describe its structs bottom-up and add an [`ApiSchema`] row
//! to [`EXTRA`] (layouts written but not served) or [`SERVED`] (must cover
//! [`crate::versions::SUPPORTED`]).

use kafka_protocol::messages::ApiKey;

/// The wire type of one field.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// A fixed number of bytes: bool and int8 (1), int16 (2), int32 (4), int64 and float64
    /// (8), uuid (16).
    Fixed(u8),
    /// A zigzag varint of at most 5 bytes (also used for unsigned varints).
    VarInt,
    /// A zigzag varlong of at most 10 bytes.
    VarLong,
    /// A string: `i16` length classic, varint length + 1 compact.
    String,
    /// Bytes: `i32` length classic, varint length + 1 compact.
    Bytes,
    /// An array of values of one type.
    Array(&'static Ty),
    /// An array of structs.
    Structs(&'static [Field]),
    /// One nested struct (not nullable).
    Struct(&'static [Field]),
    /// One nested struct that may be null: an `int8` marker (1 present, -1 null), then
    /// the struct.
    NullableStruct(&'static [Field]),
}

pub const BOOL: Ty = Ty::Fixed(1);
pub const INT8: Ty = Ty::Fixed(1);
pub const INT16: Ty = Ty::Fixed(2);
pub const INT32: Ty = Ty::Fixed(4);
pub const INT64: Ty = Ty::Fixed(8);
pub const FLOAT64: Ty = Ty::Fixed(8);
pub const UUID: Ty = Ty::Fixed(16);
pub const STRING: Ty = Ty::String;
pub const BYTES: Ty = Ty::Bytes;

/// One field of a struct.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    /// First version with this field.
    pub min: i16,
    /// Last version with this field.
    pub max: i16,
    /// The tag when the field is a tagged field.
    pub tag: Option<u32>,
}

/// A field present in every version; narrow it with [`Field::since`] and [`Field::until`].
pub const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        min: 0,
        max: i16::MAX,
        tag: None,
    }
}

impl Field {
    /// Present from version `v` on.
    pub const fn since(mut self, v: i16) -> Self {
        self.min = v;
        self
    }
    /// Present up to version `v`.
    pub const fn until(mut self, v: i16) -> Self {
        self.max = v;
        self
    }
    /// A tagged field with tag `t`.
    pub const fn tag(mut self, t: u32) -> Self {
        self.tag = Some(t);
        self
    }
}

/// The request body layout of one api over a version range.
#[derive(Debug, Clone, Copy)]
pub struct ApiSchema {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    /// First flexible version (compact encodings, tagged fields); `i16::MAX` if none.
    pub flexible_from: i16,
    pub body: &'static [Field],
}

const fn api(
    key: ApiKey,
    min: i16,
    max: i16,
    flexible_from: i16,
    body: &'static [Field],
) -> ApiSchema {
    ApiSchema {
        key,
        min,
        max,
        flexible_from,
        body,
    }
}

const NEVER: i16 = i16::MAX;

/// The schema describing `key` at `version`, from [`SERVED`] or [`EXTRA`].
pub fn find(key: ApiKey, version: i16) -> Option<&'static ApiSchema> {
    SERVED
        .iter()
        .chain(EXTRA)
        .find(|s| s.key == key && (s.min..=s.max).contains(&version))
}

/// Layouts of the apis in [`crate::versions::SUPPORTED`].
pub static SERVED: &[ApiSchema] = &[
    api(ApiKey::Produce, 3, 12, 9, PRODUCE),
    api(ApiKey::Fetch, 4, 12, 12, FETCH),
    api(ApiKey::ListOffsets, 1, 7, 6, LIST_OFFSETS),
    api(
        ApiKey::OffsetForLeaderEpoch,
        2,
        4,
        4,
        OFFSET_FOR_LEADER_EPOCH,
    ),
    api(ApiKey::Metadata, 0, 12, 9, METADATA),
    api(ApiKey::ApiVersions, 0, 4, 3, API_VERSIONS),
    api(ApiKey::CreateTopics, 2, 7, 5, CREATE_TOPICS),
    api(ApiKey::DeleteTopics, 1, 6, 4, DELETE_TOPICS),
    api(ApiKey::DescribeConfigs, 1, 4, 4, DESCRIBE_CONFIGS),
    api(ApiKey::AlterConfigs, 0, 2, 2, ALTER_CONFIGS),
    api(ApiKey::CreatePartitions, 0, 3, 2, CREATE_PARTITIONS),
    api(
        ApiKey::IncrementalAlterConfigs,
        0,
        1,
        1,
        INCREMENTAL_ALTER_CONFIGS,
    ),
    api(ApiKey::DescribeCluster, 0, 1, 0, DESCRIBE_CLUSTER),
    api(ApiKey::DescribeQuorum, 0, 1, 0, DESCRIBE_QUORUM),
    api(ApiKey::FindCoordinator, 0, 4, 3, FIND_COORDINATOR),
    api(ApiKey::JoinGroup, 0, 9, 6, JOIN_GROUP),
    api(ApiKey::SyncGroup, 0, 5, 4, SYNC_GROUP),
    api(ApiKey::Heartbeat, 0, 4, 4, HEARTBEAT),
    api(ApiKey::LeaveGroup, 0, 5, 4, LEAVE_GROUP),
    api(ApiKey::OffsetCommit, 2, 9, 8, OFFSET_COMMIT),
    api(ApiKey::OffsetFetch, 1, 9, 6, OFFSET_FETCH),
    api(ApiKey::ListGroups, 0, 5, 3, LIST_GROUPS),
    api(ApiKey::DescribeGroups, 0, 5, 5, DESCRIBE_GROUPS),
    api(ApiKey::DeleteGroups, 0, 2, 2, DELETE_GROUPS),
    api(ApiKey::OffsetDelete, 0, 0, NEVER, OFFSET_DELETE),
    api(ApiKey::DeleteRecords, 0, 2, 2, DELETE_RECORDS),
    api(ApiKey::InitProducerId, 0, 5, 2, INIT_PRODUCER_ID),
    api(ApiKey::AddPartitionsToTxn, 0, 5, 3, ADD_PARTITIONS_TO_TXN),
    api(ApiKey::AddOffsetsToTxn, 0, 4, 3, ADD_OFFSETS_TO_TXN),
    api(ApiKey::TxnOffsetCommit, 0, 5, 3, TXN_OFFSET_COMMIT),
    api(ApiKey::EndTxn, 0, 5, 3, END_TXN),
    api(ApiKey::ListTransactions, 0, 2, 0, LIST_TRANSACTIONS),
    api(ApiKey::DescribeTransactions, 0, 0, 0, DESCRIBE_TRANSACTIONS),
    api(ApiKey::DescribeProducers, 0, 0, 0, DESCRIBE_PRODUCERS),
    api(ApiKey::WriteTxnMarkers, 1, 1, 1, WRITE_TXN_MARKERS),
    api(ApiKey::ElectLeaders, 0, 2, 2, ELECT_LEADERS),
    api(
        ApiKey::AlterPartitionReassignments,
        0,
        1,
        0,
        ALTER_PARTITION_REASSIGNMENTS,
    ),
    api(
        ApiKey::ListPartitionReassignments,
        0,
        0,
        0,
        LIST_PARTITION_REASSIGNMENTS,
    ),
    api(
        ApiKey::DescribeTopicPartitions,
        0,
        0,
        0,
        DESCRIBE_TOPIC_PARTITIONS,
    ),
];

/// Layouts not served to clients: the inter-node requests a broker sends to the active
/// controller (checked by [`crate::guard::check_controller_request`]).
pub static EXTRA: &[ApiSchema] = &[
    api(ApiKey::BrokerRegistration, 0, 4, 0, BROKER_REGISTRATION),
    api(ApiKey::BrokerHeartbeat, 0, 1, 0, BROKER_HEARTBEAT),
    api(ApiKey::AlterPartition, 2, 3, 0, ALTER_PARTITION),
    api(ApiKey::AllocateProducerIds, 0, 0, 0, ALLOCATE_PRODUCER_IDS),
];

// ---- AllocateProducerIds (broker to controller) ----------------------------------------------

const ALLOCATE_PRODUCER_IDS: &[Field] = &[f("broker_id", INT32), f("broker_epoch", INT64)];

// ---- BrokerRegistration / BrokerHeartbeat (controller listener) ----------------------------

const BROKER_REGISTRATION_LISTENER: &[Field] = &[
    f("name", STRING),
    f("host", STRING),
    f("port", INT16),
    f("security_protocol", INT16),
];
const BROKER_REGISTRATION_FEATURE: &[Field] = &[
    f("name", STRING),
    f("min_supported_version", INT16),
    f("max_supported_version", INT16),
];
const BROKER_REGISTRATION: &[Field] = &[
    f("broker_id", INT32),
    f("cluster_id", STRING),
    f("incarnation_id", UUID),
    f("listeners", Ty::Structs(BROKER_REGISTRATION_LISTENER)),
    f("features", Ty::Structs(BROKER_REGISTRATION_FEATURE)),
    f("rack", STRING),
    f("is_migrating_zk_broker", BOOL).since(1),
    f("log_dirs", Ty::Array(&UUID)).since(2),
    f("previous_broker_epoch", INT64).since(3),
];
const BROKER_HEARTBEAT: &[Field] = &[
    f("broker_id", INT32),
    f("broker_epoch", INT64),
    f("current_metadata_offset", INT64),
    f("want_fence", BOOL),
    f("want_shut_down", BOOL),
    f("offline_log_dirs", Ty::Array(&UUID)).since(1).tag(0),
];

// ---- AlterPartition (controller listener) --------------------------------------------------

const ALTER_PARTITION_BROKER_STATE: &[Field] = &[
    f("broker_id", INT32).since(3),
    f("broker_epoch", INT64).since(3),
];
const ALTER_PARTITION_PARTITION: &[Field] = &[
    f("partition_index", INT32),
    f("leader_epoch", INT32),
    f("new_isr", Ty::Array(&INT32)).until(2),
    f(
        "new_isr_with_epochs",
        Ty::Structs(ALTER_PARTITION_BROKER_STATE),
    )
    .since(3),
    f("leader_recovery_state", INT8),
    f("partition_epoch", INT32),
];
const ALTER_PARTITION_TOPIC: &[Field] = &[
    f("topic_id", UUID),
    f("partitions", Ty::Structs(ALTER_PARTITION_PARTITION)),
];
const ALTER_PARTITION: &[Field] = &[
    f("broker_id", INT32),
    f("broker_epoch", INT64),
    f("topics", Ty::Structs(ALTER_PARTITION_TOPIC)),
];

// ---- Produce -------------------------------------------------------------------------------

const PRODUCE_PARTITION: &[Field] = &[f("index", INT32), f("records", BYTES)];
const PRODUCE_TOPIC: &[Field] = &[
    f("name", STRING).until(12),
    f("topic_id", UUID).since(13),
    f("partition_data", Ty::Structs(PRODUCE_PARTITION)),
];
const PRODUCE: &[Field] = &[
    f("transactional_id", STRING),
    f("acks", INT16),
    f("timeout_ms", INT32),
    f("topic_data", Ty::Structs(PRODUCE_TOPIC)),
];

// ---- Fetch ---------------------------------------------------------------------------------

const FETCH_PARTITION: &[Field] = &[
    f("partition", INT32),
    f("current_leader_epoch", INT32).since(9),
    f("fetch_offset", INT64),
    f("last_fetched_epoch", INT32).since(12),
    f("log_start_offset", INT64).since(5),
    f("partition_max_bytes", INT32),
    f("replica_directory_id", UUID).since(17).tag(0),
    f("high_watermark", INT64).since(18).tag(1),
];
const FETCH_TOPIC: &[Field] = &[
    f("topic", STRING).until(12),
    f("topic_id", UUID).since(13),
    f("partitions", Ty::Structs(FETCH_PARTITION)),
];
const FORGOTTEN_TOPIC: &[Field] = &[
    f("topic", STRING).since(7).until(12),
    f("topic_id", UUID).since(13),
    f("partitions", Ty::Array(&INT32)).since(7),
];
const REPLICA_STATE: &[Field] = &[
    f("replica_id", INT32).since(15),
    f("replica_epoch", INT64).since(15),
];
const FETCH: &[Field] = &[
    f("cluster_id", STRING).since(12).tag(0),
    f("replica_id", INT32).until(14),
    f("replica_state", Ty::Struct(REPLICA_STATE))
        .since(15)
        .tag(1),
    f("max_wait_ms", INT32),
    f("min_bytes", INT32),
    f("max_bytes", INT32),
    f("isolation_level", INT8),
    f("session_id", INT32).since(7),
    f("session_epoch", INT32).since(7),
    f("topics", Ty::Structs(FETCH_TOPIC)),
    f("forgotten_topics_data", Ty::Structs(FORGOTTEN_TOPIC)).since(7),
    f("rack_id", STRING).since(11),
];

// ---- ListOffsets ---------------------------------------------------------------------------

const LIST_OFFSETS_PARTITION: &[Field] = &[
    f("partition_index", INT32),
    f("current_leader_epoch", INT32).since(4),
    f("timestamp", INT64),
];
const LIST_OFFSETS_TOPIC: &[Field] = &[
    f("name", STRING),
    f("partitions", Ty::Structs(LIST_OFFSETS_PARTITION)),
];
const LIST_OFFSETS: &[Field] = &[
    f("replica_id", INT32),
    f("isolation_level", INT8).since(2),
    f("topics", Ty::Structs(LIST_OFFSETS_TOPIC)),
    f("timeout_ms", INT32).since(10),
];

// ---- OffsetForLeaderEpoch -----------------------------------------------------------------

const OFFSET_FOR_LEADER_PARTITION: &[Field] = &[
    f("partition", INT32),
    f("current_leader_epoch", INT32),
    f("leader_epoch", INT32),
];
const OFFSET_FOR_LEADER_TOPIC: &[Field] = &[
    f("topic", STRING),
    f("partitions", Ty::Structs(OFFSET_FOR_LEADER_PARTITION)),
];
const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    f("replica_id", INT32).since(3),
    f("topics", Ty::Structs(OFFSET_FOR_LEADER_TOPIC)),
];

// ---- Metadata ------------------------------------------------------------------------------

const METADATA_TOPIC: &[Field] = &[f("topic_id", UUID).since(10), f("name", STRING)];
const METADATA: &[Field] = &[
    f("topics", Ty::Structs(METADATA_TOPIC)),
    f("allow_auto_topic_creation", BOOL).since(4),
    f("include_cluster_authorized_operations", BOOL)
        .since(8)
        .until(10),
    f("include_topic_authorized_operations", BOOL).since(8),
];

// ---- ApiVersions ---------------------------------------------------------------------------

const API_VERSIONS: &[Field] = &[
    f("client_software_name", STRING).since(3),
    f("client_software_version", STRING).since(3),
];

// ---- CreateTopics --------------------------------------------------------------------------

const CREATABLE_ASSIGNMENT: &[Field] = &[
    f("partition_index", INT32),
    f("broker_ids", Ty::Array(&INT32)),
];
const CREATABLE_CONFIG: &[Field] = &[f("name", STRING), f("value", STRING)];
const CREATABLE_TOPIC: &[Field] = &[
    f("name", STRING),
    f("num_partitions", INT32),
    f("replication_factor", INT16),
    f("assignments", Ty::Structs(CREATABLE_ASSIGNMENT)),
    f("configs", Ty::Structs(CREATABLE_CONFIG)),
];
const CREATE_TOPICS: &[Field] = &[
    f("topics", Ty::Structs(CREATABLE_TOPIC)),
    f("timeout_ms", INT32),
    f("validate_only", BOOL).since(1),
];

// ---- DeleteTopics --------------------------------------------------------------------------

const DELETE_TOPIC_STATE: &[Field] = &[f("name", STRING).since(6), f("topic_id", UUID).since(6)];
const DELETE_TOPICS: &[Field] = &[
    f("topics", Ty::Structs(DELETE_TOPIC_STATE)).since(6),
    f("topic_names", Ty::Array(&STRING)).until(5),
    f("timeout_ms", INT32),
];

// ---- DescribeConfigs -----------------------------------------------------------------------

const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[
    f("resource_type", INT8),
    f("resource_name", STRING),
    f("configuration_keys", Ty::Array(&STRING)),
];
const DESCRIBE_CONFIGS: &[Field] = &[
    f("resources", Ty::Structs(DESCRIBE_CONFIGS_RESOURCE)),
    f("include_synonyms", BOOL).since(1),
    f("include_documentation", BOOL).since(3),
];

// ---- AlterConfigs and IncrementalAlterConfigs ----------------------------------------------

const ALTERABLE_CONFIG: &[Field] = &[f("name", STRING), f("value", STRING)];
const ALTER_CONFIGS_RESOURCE: &[Field] = &[
    f("resource_type", INT8),
    f("resource_name", STRING),
    f("configs", Ty::Structs(ALTERABLE_CONFIG)),
];
const ALTER_CONFIGS: &[Field] = &[
    f("resources", Ty::Structs(ALTER_CONFIGS_RESOURCE)),
    f("validate_only", BOOL),
];

const INCREMENTAL_CONFIG: &[Field] = &[
    f("name", STRING),
    f("config_operation", INT8),
    f("value", STRING),
];
const INCREMENTAL_RESOURCE: &[Field] = &[
    f("resource_type", INT8),
    f("resource_name", STRING),
    f("configs", Ty::Structs(INCREMENTAL_CONFIG)),
];
const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    f("resources", Ty::Structs(INCREMENTAL_RESOURCE)),
    f("validate_only", BOOL),
];

// ---- CreatePartitions ----------------------------------------------------------------------

const CREATE_PARTITIONS_ASSIGNMENT: &[Field] = &[f("broker_ids", Ty::Array(&INT32))];
const CREATE_PARTITIONS_TOPIC: &[Field] = &[
    f("name", STRING),
    f("count", INT32),
    f("assignments", Ty::Structs(CREATE_PARTITIONS_ASSIGNMENT)),
];
const CREATE_PARTITIONS: &[Field] = &[
    f("topics", Ty::Structs(CREATE_PARTITIONS_TOPIC)),
    f("timeout_ms", INT32),
    f("validate_only", BOOL),
];

// ---- ElectLeaders --------------------------------------------------------------------------

const ELECT_LEADERS_TOPIC: &[Field] = &[f("topic", STRING), f("partitions", Ty::Array(&INT32))];
const ELECT_LEADERS: &[Field] = &[
    f("election_type", INT8).since(1),
    f("topic_partitions", Ty::Structs(ELECT_LEADERS_TOPIC)),
    f("timeout_ms", INT32),
];

// ---- AlterPartitionReassignments / ListPartitionReassignments -----------------------------

const REASSIGNABLE_PARTITION: &[Field] = &[
    f("partition_index", INT32),
    f("replicas", Ty::Array(&INT32)),
];
const REASSIGNABLE_TOPIC: &[Field] = &[
    f("name", STRING),
    f("partitions", Ty::Structs(REASSIGNABLE_PARTITION)),
];
const ALTER_PARTITION_REASSIGNMENTS: &[Field] = &[
    f("timeout_ms", INT32),
    f("allow_replication_factor_change", BOOL).since(1),
    f("topics", Ty::Structs(REASSIGNABLE_TOPIC)),
];
const LIST_REASSIGNMENTS_TOPIC: &[Field] =
    &[f("name", STRING), f("partition_indexes", Ty::Array(&INT32))];
const LIST_PARTITION_REASSIGNMENTS: &[Field] = &[
    f("timeout_ms", INT32),
    f("topics", Ty::Structs(LIST_REASSIGNMENTS_TOPIC)),
];

// ---- DescribeTopicPartitions --------------------------------------------------------------

const DESCRIBE_TOPIC_PARTITIONS_TOPIC: &[Field] = &[f("name", STRING)];
const DESCRIBE_TOPIC_PARTITIONS_CURSOR: &[Field] =
    &[f("topic_name", STRING), f("partition_index", INT32)];
const DESCRIBE_TOPIC_PARTITIONS: &[Field] = &[
    f("topics", Ty::Structs(DESCRIBE_TOPIC_PARTITIONS_TOPIC)),
    f("response_partition_limit", INT32),
    f(
        "cursor",
        Ty::NullableStruct(DESCRIBE_TOPIC_PARTITIONS_CURSOR),
    ),
];

// ---- DescribeCluster -----------------------------------------------------------------------

const DESCRIBE_CLUSTER: &[Field] = &[
    f("include_cluster_authorized_operations", BOOL),
    f("endpoint_type", INT8).since(1),
    f("include_fenced_brokers", BOOL).since(2),
];

const DESCRIBE_QUORUM_PARTITION: &[Field] = &[f("partition_index", INT32)];
const DESCRIBE_QUORUM_TOPIC: &[Field] = &[
    f("topic_name", STRING),
    f("partitions", Ty::Structs(DESCRIBE_QUORUM_PARTITION)),
];
const DESCRIBE_QUORUM: &[Field] = &[f("topics", Ty::Structs(DESCRIBE_QUORUM_TOPIC))];

// ---- Group coordination (not served yet) ---------------------------------------------------

const FIND_COORDINATOR: &[Field] = &[
    f("key", STRING).until(3),
    f("key_type", INT8).since(1),
    f("coordinator_keys", Ty::Array(&STRING)).since(4),
];

const JOIN_GROUP_PROTOCOL: &[Field] = &[f("name", STRING), f("metadata", BYTES)];
const JOIN_GROUP: &[Field] = &[
    f("group_id", STRING),
    f("session_timeout_ms", INT32),
    f("rebalance_timeout_ms", INT32).since(1),
    f("member_id", STRING),
    f("group_instance_id", STRING).since(5),
    f("protocol_type", STRING),
    f("protocols", Ty::Structs(JOIN_GROUP_PROTOCOL)),
    f("reason", STRING).since(8),
];

const SYNC_GROUP_ASSIGNMENT: &[Field] = &[f("member_id", STRING), f("assignment", BYTES)];
const SYNC_GROUP: &[Field] = &[
    f("group_id", STRING),
    f("generation_id", INT32),
    f("member_id", STRING),
    f("group_instance_id", STRING).since(3),
    f("protocol_type", STRING).since(5),
    f("protocol_name", STRING).since(5),
    f("assignments", Ty::Structs(SYNC_GROUP_ASSIGNMENT)),
];

const HEARTBEAT: &[Field] = &[
    f("group_id", STRING),
    f("generation_id", INT32),
    f("member_id", STRING),
    f("group_instance_id", STRING).since(3),
];

const LEAVE_GROUP_MEMBER: &[Field] = &[
    f("member_id", STRING).since(3),
    f("group_instance_id", STRING).since(3),
    f("reason", STRING).since(5),
];
const LEAVE_GROUP: &[Field] = &[
    f("group_id", STRING),
    f("member_id", STRING).until(2),
    f("members", Ty::Structs(LEAVE_GROUP_MEMBER)).since(3),
];

const OFFSET_COMMIT_PARTITION: &[Field] = &[
    f("partition_index", INT32),
    f("committed_offset", INT64),
    f("committed_leader_epoch", INT32).since(6),
    f("committed_metadata", STRING),
];
const OFFSET_COMMIT_TOPIC: &[Field] = &[
    f("name", STRING),
    f("partitions", Ty::Structs(OFFSET_COMMIT_PARTITION)),
];
const OFFSET_COMMIT: &[Field] = &[
    f("group_id", STRING),
    f("generation_id_or_member_epoch", INT32),
    f("member_id", STRING),
    f("group_instance_id", STRING).since(7),
    f("retention_time_ms", INT64).until(4),
    f("topics", Ty::Structs(OFFSET_COMMIT_TOPIC)),
];

const OFFSET_FETCH_TOPIC: &[Field] = &[
    f("name", STRING).until(7),
    f("partition_indexes", Ty::Array(&INT32)).until(7),
];
const OFFSET_FETCH_GROUP_TOPIC: &[Field] = &[
    f("name", STRING).since(8),
    f("partition_indexes", Ty::Array(&INT32)).since(8),
];
const OFFSET_FETCH_GROUP: &[Field] = &[
    f("group_id", STRING).since(8),
    f("member_id", STRING).since(9),
    f("member_epoch", INT32).since(9),
    f("topics", Ty::Structs(OFFSET_FETCH_GROUP_TOPIC)).since(8),
];
const OFFSET_FETCH: &[Field] = &[
    f("group_id", STRING).until(7),
    f("topics", Ty::Structs(OFFSET_FETCH_TOPIC)).until(7),
    f("groups", Ty::Structs(OFFSET_FETCH_GROUP)).since(8),
    f("require_stable", BOOL).since(7),
];

const LIST_GROUPS: &[Field] = &[
    f("states_filter", Ty::Array(&STRING)).since(4),
    f("types_filter", Ty::Array(&STRING)).since(5),
];

const DESCRIBE_GROUPS: &[Field] = &[
    f("groups", Ty::Array(&STRING)),
    f("include_authorized_operations", BOOL).since(3),
];

const DELETE_GROUPS: &[Field] = &[f("groups_names", Ty::Array(&STRING))];

const OFFSET_DELETE_PARTITION: &[Field] = &[f("partition_index", INT32)];
const OFFSET_DELETE_TOPIC: &[Field] = &[
    f("name", STRING),
    f("partitions", Ty::Structs(OFFSET_DELETE_PARTITION)),
];
const OFFSET_DELETE: &[Field] = &[
    f("group_id", STRING),
    f("topics", Ty::Structs(OFFSET_DELETE_TOPIC)),
];

// ---- Transactions and records (not served yet) ---------------------------------------------

const INIT_PRODUCER_ID: &[Field] = &[
    f("transactional_id", STRING),
    f("transaction_timeout_ms", INT32),
    f("producer_id", INT64).since(3),
    f("producer_epoch", INT16).since(3),
];

// ---- Transactions ---------------------------------------------------------------------------

const TXN_TOPIC_PARTITIONS: &[Field] = &[f("name", STRING), f("partitions", Ty::Array(&INT32))];
const ADD_PARTITIONS_TO_TXN_TRANSACTION: &[Field] = &[
    f("transactional_id", STRING),
    f("producer_id", INT64),
    f("producer_epoch", INT16),
    f("verify_only", BOOL),
    f("topics", Ty::Structs(TXN_TOPIC_PARTITIONS)),
];
const ADD_PARTITIONS_TO_TXN: &[Field] = &[
    f(
        "transactions",
        Ty::Structs(ADD_PARTITIONS_TO_TXN_TRANSACTION),
    )
    .since(4),
    f("v3_and_below_transactional_id", STRING).until(3),
    f("v3_and_below_producer_id", INT64).until(3),
    f("v3_and_below_producer_epoch", INT16).until(3),
    f("v3_and_below_topics", Ty::Structs(TXN_TOPIC_PARTITIONS)).until(3),
];
const ADD_OFFSETS_TO_TXN: &[Field] = &[
    f("transactional_id", STRING),
    f("producer_id", INT64),
    f("producer_epoch", INT16),
    f("group_id", STRING),
];
const TXN_OFFSET_COMMIT_PARTITION: &[Field] = &[
    f("partition_index", INT32),
    f("committed_offset", INT64),
    f("committed_leader_epoch", INT32).since(2),
    f("committed_metadata", STRING),
];
const TXN_OFFSET_COMMIT_TOPIC: &[Field] = &[
    f("name", STRING),
    f("partitions", Ty::Structs(TXN_OFFSET_COMMIT_PARTITION)),
];
const TXN_OFFSET_COMMIT: &[Field] = &[
    f("transactional_id", STRING),
    f("group_id", STRING),
    f("producer_id", INT64),
    f("producer_epoch", INT16),
    f("generation_id", INT32).since(3),
    f("member_id", STRING).since(3),
    f("group_instance_id", STRING).since(3),
    f("topics", Ty::Structs(TXN_OFFSET_COMMIT_TOPIC)),
];
const END_TXN: &[Field] = &[
    f("transactional_id", STRING),
    f("producer_id", INT64),
    f("producer_epoch", INT16),
    f("committed", BOOL),
];
const LIST_TRANSACTIONS: &[Field] = &[
    f("state_filters", Ty::Array(&STRING)),
    f("producer_id_filters", Ty::Array(&INT64)),
    f("duration_filter", INT64).since(1),
    f("transactional_id_pattern", STRING).since(2),
];
const DESCRIBE_TRANSACTIONS: &[Field] = &[f("transactional_ids", Ty::Array(&STRING))];
const DESCRIBE_PRODUCERS_TOPIC: &[Field] =
    &[f("name", STRING), f("partition_indexes", Ty::Array(&INT32))];
const DESCRIBE_PRODUCERS: &[Field] = &[f("topics", Ty::Structs(DESCRIBE_PRODUCERS_TOPIC))];

const WRITE_TXN_MARKERS_TOPIC: &[Field] =
    &[f("name", STRING), f("partition_indexes", Ty::Array(&INT32))];
const WRITE_TXN_MARKERS_MARKER: &[Field] = &[
    f("producer_id", INT64),
    f("producer_epoch", INT16),
    f("transaction_result", BOOL),
    f("topics", Ty::Structs(WRITE_TXN_MARKERS_TOPIC)),
    f("coordinator_epoch", INT32),
];
const WRITE_TXN_MARKERS: &[Field] = &[f("markers", Ty::Structs(WRITE_TXN_MARKERS_MARKER))];

const DELETE_RECORDS_PARTITION: &[Field] = &[f("partition_index", INT32), f("offset", INT64)];
const DELETE_RECORDS_TOPIC: &[Field] = &[
    f("name", STRING),
    f("partitions", Ty::Structs(DELETE_RECORDS_PARTITION)),
];
const DELETE_RECORDS: &[Field] = &[
    f("topics", Ty::Structs(DELETE_RECORDS_TOPIC)),
    f("timeout_ms", INT32),
];
