use super::schema::{self, ApiSchema};
use super::*;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Debug;

const CAP: usize = 64 << 20;

fn s(x: &'static str) -> StrBytes {
    StrBytes::from_static_str(x)
}

fn topic(x: &'static str) -> TopicName {
    TopicName(s(x))
}

/// A uuid of sixteen `$n` bytes (the `uuid` crate is not a dependency; let the codec build it
/// from a flexible Metadata topic: the id, a null name, no tagged fields).
macro_rules! uuid {
    ($n:expr) => {{
        let mut raw = vec![$n; 16];
        raw.extend([0, 0]);
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::decode(
            &mut Bytes::from(raw),
            10,
        )
        .unwrap()
        .topic_id
    }};
}

/// Every layout written, served or not.
fn all_schemas() -> impl Iterator<Item = &'static ApiSchema> {
    schema::SERVED.iter().chain(schema::EXTRA)
}

fn all_pairs() -> Vec<(ApiKey, i16)> {
    all_schemas()
        .flat_map(|s| (s.min..=s.max).map(move |v| (s.key, v)))
        .collect()
}

/// Checks with every written layout served.
fn check_any(frame: &[u8], cap: usize) -> Result<(), GuardError> {
    check_frame(frame, cap, |_, _| true)
}

fn header(key: ApiKey, v: i16) -> Vec<u8> {
    let hv = key.request_header_version(v);
    let mut h = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(v)
        .with_correlation_id(0x1234_5678)
        .with_client_id(if v % 2 == 0 {
            Some(s("gregor-test"))
        } else {
            None
        });
    if hv >= 2 {
        h = h.with_unknown_tagged_field(3, Bytes::from_static(b"header-tag"));
    }
    let mut buf = BytesMut::new();
    h.encode(&mut buf, hv).unwrap();
    buf.to_vec()
}

/// Encodes `req` at `v`, checks the codec decodes it back unchanged, and returns the bytes.
fn enc<T: Encodable + Decodable + PartialEq + Debug>(req: T, v: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    req.encode(&mut buf, v)
        .unwrap_or_else(|e| panic!("encoding {req:?} at v{v}: {e}"));
    let bytes = buf.freeze();
    let back = T::decode(&mut bytes.clone(), v).unwrap();
    assert_eq!(back, req, "round trip at v{v}");
    bytes.to_vec()
}

/// Decodes a body with the codec; errors as text (the crate returns anyhow errors).
fn decode_body(key: ApiKey, buf: &mut Bytes, v: i16) -> Result<(), String> {
    fn d<T: Decodable>(buf: &mut Bytes, v: i16) -> Result<(), String> {
        T::decode(buf, v).map(drop).map_err(|e| e.to_string())
    }
    match key {
        ApiKey::Produce => d::<ProduceRequest>(buf, v),
        ApiKey::Fetch => d::<FetchRequest>(buf, v),
        ApiKey::ListOffsets => d::<ListOffsetsRequest>(buf, v),
        ApiKey::OffsetForLeaderEpoch => d::<OffsetForLeaderEpochRequest>(buf, v),
        ApiKey::Metadata => d::<MetadataRequest>(buf, v),
        ApiKey::ApiVersions => d::<ApiVersionsRequest>(buf, v),
        ApiKey::CreateTopics => d::<CreateTopicsRequest>(buf, v),
        ApiKey::DeleteTopics => d::<DeleteTopicsRequest>(buf, v),
        ApiKey::DescribeConfigs => d::<DescribeConfigsRequest>(buf, v),
        ApiKey::AlterConfigs => d::<AlterConfigsRequest>(buf, v),
        ApiKey::CreatePartitions => d::<CreatePartitionsRequest>(buf, v),
        ApiKey::IncrementalAlterConfigs => d::<IncrementalAlterConfigsRequest>(buf, v),
        ApiKey::DescribeCluster => d::<DescribeClusterRequest>(buf, v),
        ApiKey::DescribeQuorum => d::<DescribeQuorumRequest>(buf, v),
        ApiKey::FindCoordinator => d::<FindCoordinatorRequest>(buf, v),
        ApiKey::JoinGroup => d::<JoinGroupRequest>(buf, v),
        ApiKey::SyncGroup => d::<SyncGroupRequest>(buf, v),
        ApiKey::Heartbeat => d::<HeartbeatRequest>(buf, v),
        ApiKey::LeaveGroup => d::<LeaveGroupRequest>(buf, v),
        ApiKey::OffsetCommit => d::<OffsetCommitRequest>(buf, v),
        ApiKey::OffsetFetch => d::<OffsetFetchRequest>(buf, v),
        ApiKey::ListGroups => d::<ListGroupsRequest>(buf, v),
        ApiKey::DescribeGroups => d::<DescribeGroupsRequest>(buf, v),
        ApiKey::DeleteGroups => d::<DeleteGroupsRequest>(buf, v),
        ApiKey::OffsetDelete => d::<OffsetDeleteRequest>(buf, v),
        ApiKey::InitProducerId => d::<InitProducerIdRequest>(buf, v),
        ApiKey::DeleteRecords => d::<DeleteRecordsRequest>(buf, v),
        ApiKey::AddPartitionsToTxn => d::<AddPartitionsToTxnRequest>(buf, v),
        ApiKey::AddOffsetsToTxn => d::<AddOffsetsToTxnRequest>(buf, v),
        ApiKey::TxnOffsetCommit => d::<TxnOffsetCommitRequest>(buf, v),
        ApiKey::EndTxn => d::<EndTxnRequest>(buf, v),
        ApiKey::ListTransactions => d::<ListTransactionsRequest>(buf, v),
        ApiKey::DescribeTransactions => d::<DescribeTransactionsRequest>(buf, v),
        ApiKey::DescribeProducers => d::<DescribeProducersRequest>(buf, v),
        ApiKey::WriteTxnMarkers => d::<WriteTxnMarkersRequest>(buf, v),
        ApiKey::ElectLeaders => d::<ElectLeadersRequest>(buf, v),
        ApiKey::AlterPartitionReassignments => d::<AlterPartitionReassignmentsRequest>(buf, v),
        ApiKey::ListPartitionReassignments => d::<ListPartitionReassignmentsRequest>(buf, v),
        ApiKey::DescribeTopicPartitions => d::<DescribeTopicPartitionsRequest>(buf, v),
        ApiKey::BrokerRegistration => d::<BrokerRegistrationRequest>(buf, v),
        ApiKey::BrokerHeartbeat => d::<BrokerHeartbeatRequest>(buf, v),
        ApiKey::AlterPartition => d::<AlterPartitionRequest>(buf, v),
        ApiKey::AllocateProducerIds => d::<AllocateProducerIdsRequest>(buf, v),
        other => Err(format!("no codec wired for {other:?}")),
    }
}

/// Decodes a whole frame (header and body) the way the broker does.
fn codec_decode(frame: &[u8]) -> Result<(), String> {
    if frame.len() < 4 {
        return Err("short".into());
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let v = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(key).map_err(|_| "unknown key".to_string())?;
    let mut buf = Bytes::copy_from_slice(frame);
    RequestHeader::decode(&mut buf, key.request_header_version(v)).map_err(|e| e.to_string())?;
    decode_body(key, &mut buf, v)
}

/// A request of `key` at `v` with non-trivial contents, encoded and checked by the codec.
fn body(key: ApiKey, v: i16) -> Vec<u8> {
    let flex = v >= schema::find(key, v).unwrap().flexible_from;
    let unknown: BTreeMap<i32, Bytes> = if flex {
        BTreeMap::from([(99, Bytes::from_static(b"future"))])
    } else {
        BTreeMap::new()
    };
    match key {
        ApiKey::Produce => {
            use kafka_protocol::messages::produce_request::*;
            let part = |i, r: Option<&'static [u8]>| {
                PartitionProduceData::default()
                    .with_index(i)
                    .with_records(r.map(Bytes::from_static))
            };
            let t = |name, n| {
                TopicProduceData::default()
                    .with_name(topic(name))
                    .with_partition_data(vec![part(n, Some(b"batch-bytes")), part(n + 1, None)])
            };
            let req = ProduceRequest::default()
                .with_transactional_id((v % 2 == 1).then(|| TransactionalId(s("txn"))))
                .with_acks(-1)
                .with_timeout_ms(1500)
                .with_topic_data(vec![t("a", 0), t("bb", 7)])
                .with_unknown_tagged_fields(unknown);
            enc(req, v)
        }
        ApiKey::Fetch => {
            use kafka_protocol::messages::fetch_request::*;
            let p = |i| {
                let mut p = FetchPartition::default()
                    .with_partition(i)
                    .with_fetch_offset(1000 + i64::from(i))
                    .with_partition_max_bytes(1 << 20);
                if v >= 9 {
                    p = p.with_current_leader_epoch(3);
                }
                if v >= 12 {
                    p = p.with_last_fetched_epoch(2);
                }
                if v >= 5 {
                    p = p.with_log_start_offset(10);
                }
                p
            };
            let topics = vec![
                FetchTopic::default()
                    .with_topic(topic("t1"))
                    .with_partitions(vec![p(0), p(1), p(2)]),
                FetchTopic::default()
                    .with_topic(topic("t2"))
                    .with_partitions(vec![p(5)]),
            ];
            let mut req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(1 << 24)
                .with_isolation_level(1)
                .with_topics(topics)
                .with_unknown_tagged_fields(unknown);
            if v >= 7 {
                req = req
                    .with_session_id(77)
                    .with_session_epoch(4)
                    .with_forgotten_topics_data(vec![
                        ForgottenTopic::default()
                            .with_topic(topic("gone"))
                            .with_partitions(vec![1, 2, 3]),
                        ForgottenTopic::default().with_topic(topic("g2")),
                    ]);
            }
            if v >= 11 {
                req = req.with_rack_id(s("rack-1"));
            }
            if v >= 12 {
                req = req.with_cluster_id(Some(s("cluster-xyz")));
            }
            enc(req, v)
        }
        ApiKey::ListOffsets => {
            use kafka_protocol::messages::list_offsets_request::*;
            let p = |i| {
                let p = ListOffsetsPartition::default()
                    .with_partition_index(i)
                    .with_timestamp(-1);
                if v >= 4 {
                    p.with_current_leader_epoch(9)
                } else {
                    p
                }
            };
            let mut req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(topic("x"))
                        .with_partitions(vec![p(0), p(1)]),
                    ListOffsetsTopic::default().with_name(topic("yy")),
                ])
                .with_unknown_tagged_fields(unknown);
            if v >= 2 {
                req = req.with_isolation_level(1);
            }
            enc(req, v)
        }
        ApiKey::Metadata => {
            use kafka_protocol::messages::metadata_request::*;
            let t = |name: Option<&'static str>| {
                MetadataRequestTopic::default().with_name(name.map(topic))
            };
            let topics = if v >= 1 && v % 3 == 0 {
                None
            } else if v >= 10 {
                Some(vec![
                    t(Some("m1")),
                    t(None).with_topic_id(uuid!(7)),
                    t(Some("m3")),
                ])
            } else {
                Some(vec![t(Some("m1")), t(Some("m2")), t(Some("m3"))])
            };
            let mut req = MetadataRequest::default()
                .with_topics(topics)
                .with_unknown_tagged_fields(unknown);
            if v >= 4 {
                req = req.with_allow_auto_topic_creation(false);
            }
            if (8..=10).contains(&v) {
                req = req.with_include_cluster_authorized_operations(true);
            }
            if v >= 8 {
                req = req.with_include_topic_authorized_operations(true);
            }
            enc(req, v)
        }
        ApiKey::ApiVersions => {
            let mut req = ApiVersionsRequest::default().with_unknown_tagged_fields(unknown);
            if v >= 3 {
                req = req
                    .with_client_software_name(s("gregor-tests"))
                    .with_client_software_version(s("0.1.0"));
            }
            enc(req, v)
        }
        ApiKey::CreateTopics => {
            use kafka_protocol::messages::create_topics_request::*;
            let a = |i| {
                CreatableReplicaAssignment::default()
                    .with_partition_index(i)
                    .with_broker_ids(vec![BrokerId(1), BrokerId(2), BrokerId(3)])
            };
            let c = |n, val: Option<&'static str>| {
                CreatableTopicConfig::default()
                    .with_name(s(n))
                    .with_value(val.map(s))
            };
            let req = CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(topic("new1"))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_assignments(vec![a(0), a(1)])
                        .with_configs(vec![c("cleanup.policy", Some("compact")), c("x", None)]),
                    CreatableTopic::default()
                        .with_name(topic("new2"))
                        .with_num_partitions(3)
                        .with_replication_factor(1),
                ])
                .with_timeout_ms(30000)
                .with_validate_only(true)
                .with_unknown_tagged_fields(unknown);
            enc(req, v)
        }
        ApiKey::DeleteTopics => {
            use kafka_protocol::messages::delete_topics_request::*;
            let mut req = DeleteTopicsRequest::default()
                .with_timeout_ms(100)
                .with_unknown_tagged_fields(unknown);
            if v >= 6 {
                req = req.with_topics(vec![
                    DeleteTopicState::default().with_name(Some(topic("d1"))),
                    DeleteTopicState::default()
                        .with_name(None)
                        .with_topic_id(uuid!(3)),
                ]);
            } else {
                req = req.with_topic_names(vec![topic("d1"), topic("d22"), topic("d333")]);
            }
            enc(req, v)
        }
        ApiKey::DescribeConfigs => {
            use kafka_protocol::messages::describe_configs_request::*;
            let mut req = DescribeConfigsRequest::default()
                .with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("topic-a"))
                        .with_configuration_keys(Some(vec![s("retention.ms"), s("x")])),
                    DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(s("1"))
                        .with_configuration_keys(None),
                ])
                .with_include_synonyms(true)
                .with_unknown_tagged_fields(unknown);
            if v >= 3 {
                req = req.with_include_documentation(true);
            }
            enc(req, v)
        }
        ApiKey::AlterConfigs => {
            use kafka_protocol::messages::alter_configs_request::*;
            let c = |n, val: Option<&'static str>| {
                AlterableConfig::default()
                    .with_name(s(n))
                    .with_value(val.map(s))
            };
            let req = AlterConfigsRequest::default()
                .with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("t"))
                        .with_configs(vec![c("a", Some("1")), c("b", None)]),
                    AlterConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(s("0")),
                ])
                .with_validate_only(true)
                .with_unknown_tagged_fields(unknown);
            enc(req, v)
        }
        ApiKey::CreatePartitions => {
            use kafka_protocol::messages::create_partitions_request::*;
            let a = |ids: Vec<i32>| {
                CreatePartitionsAssignment::default()
                    .with_broker_ids(ids.into_iter().map(BrokerId).collect())
            };
            let req = CreatePartitionsRequest::default()
                .with_topics(vec![
                    CreatePartitionsTopic::default()
                        .with_name(topic("p1"))
                        .with_count(5)
                        .with_assignments(Some(vec![a(vec![1, 2]), a(vec![3])])),
                    CreatePartitionsTopic::default()
                        .with_name(topic("p2"))
                        .with_count(2)
                        .with_assignments(None),
                ])
                .with_timeout_ms(10)
                .with_validate_only(false)
                .with_unknown_tagged_fields(unknown);
            enc(req, v)
        }
        ApiKey::IncrementalAlterConfigs => {
            use kafka_protocol::messages::incremental_alter_configs_request::*;
            let c = |n, op, val: Option<&'static str>| {
                AlterableConfig::default()
                    .with_name(s(n))
                    .with_config_operation(op)
                    .with_value(val.map(s))
            };
            let req = IncrementalAlterConfigsRequest::default()
                .with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("t"))
                        .with_configs(vec![c("a", 0, Some("1")), c("b", 1, None)]),
                    AlterConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(s("0"))
                        .with_configs(vec![c("c", 2, Some("x,y"))]),
                ])
                .with_validate_only(true)
                .with_unknown_tagged_fields(unknown);
            enc(req, v)
        }
        ApiKey::DescribeQuorum => {
            use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
            let req = DescribeQuorumRequest::default()
                .with_topics(vec![TopicData::default()
                    .with_topic_name(TopicName(s("__cluster_metadata")))
                    .with_partitions(vec![
                        PartitionData::default().with_partition_index(0)
                    ])])
                .with_unknown_tagged_fields(unknown);
            enc(req, v)
        }
        ApiKey::DescribeCluster => {
            let mut req = DescribeClusterRequest::default()
                .with_include_cluster_authorized_operations(true)
                .with_unknown_tagged_fields(unknown);
            if v >= 1 {
                req = req.with_endpoint_type(2);
            }
            enc(req, v)
        }
        ApiKey::FindCoordinator => {
            let mut req = FindCoordinatorRequest::default().with_unknown_tagged_fields(unknown);
            if v <= 3 {
                req = req.with_key(s("group-1"));
            } else {
                req = req.with_coordinator_keys(vec![s("g1"), s("g2"), s("")]);
            }
            if v >= 1 {
                req = req.with_key_type(1);
            }
            enc(req, v)
        }
        ApiKey::JoinGroup => {
            use kafka_protocol::messages::join_group_request::*;
            let p = |n, m: &'static [u8]| {
                JoinGroupRequestProtocol::default()
                    .with_name(s(n))
                    .with_metadata(Bytes::from_static(m))
            };
            let mut req = JoinGroupRequest::default()
                .with_group_id(GroupId(s("grp")))
                .with_session_timeout_ms(10000)
                .with_member_id(s("member-1"))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![p("range", b"\x00\x01meta"), p("roundrobin", b"")])
                .with_unknown_tagged_fields(unknown);
            if v >= 1 {
                req = req.with_rebalance_timeout_ms(20000);
            }
            if v >= 5 {
                req = req.with_group_instance_id((v % 2 == 0).then(|| s("inst")));
            }
            if v >= 8 {
                req = req.with_reason(Some(s("because")));
            }
            enc(req, v)
        }
        ApiKey::SyncGroup => {
            use kafka_protocol::messages::sync_group_request::*;
            let a = |m, b: &'static [u8]| {
                SyncGroupRequestAssignment::default()
                    .with_member_id(s(m))
                    .with_assignment(Bytes::from_static(b))
            };
            let mut req = SyncGroupRequest::default()
                .with_group_id(GroupId(s("grp")))
                .with_generation_id(3)
                .with_member_id(s("m1"))
                .with_assignments(vec![a("m1", b"abc"), a("m2", b"")])
                .with_unknown_tagged_fields(unknown);
            if v >= 3 {
                req = req.with_group_instance_id(Some(s("inst")));
            }
            if v >= 5 {
                req = req
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(None);
            }
            enc(req, v)
        }
        ApiKey::Heartbeat => {
            let mut req = HeartbeatRequest::default()
                .with_group_id(GroupId(s("grp")))
                .with_generation_id(3)
                .with_member_id(s("m1"))
                .with_unknown_tagged_fields(unknown);
            if v >= 3 {
                req = req.with_group_instance_id((v == 3).then(|| s("inst")));
            }
            enc(req, v)
        }
        ApiKey::LeaveGroup => {
            use kafka_protocol::messages::leave_group_request::*;
            let mut req = LeaveGroupRequest::default()
                .with_group_id(GroupId(s("grp")))
                .with_unknown_tagged_fields(unknown);
            if v <= 2 {
                req = req.with_member_id(s("m1"));
            } else {
                let m = |id, inst: Option<&'static str>| {
                    let m = MemberIdentity::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(inst.map(s));
                    if v >= 5 {
                        m.with_reason(Some(s("bye")))
                    } else {
                        m
                    }
                };
                req = req.with_members(vec![m("m1", Some("i1")), m("m2", None)]);
            }
            enc(req, v)
        }
        ApiKey::OffsetCommit => {
            use kafka_protocol::messages::offset_commit_request::*;
            let p = |i, md: Option<&'static str>| {
                let p = OffsetCommitRequestPartition::default()
                    .with_partition_index(i)
                    .with_committed_offset(42)
                    .with_committed_metadata(md.map(s));
                if v >= 6 {
                    p.with_committed_leader_epoch(5)
                } else {
                    p
                }
            };
            let mut req = OffsetCommitRequest::default()
                .with_group_id(GroupId(s("grp")))
                .with_generation_id_or_member_epoch(7)
                .with_member_id(s("m1"))
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(topic("t"))
                        .with_partitions(vec![p(0, Some("meta")), p(1, None)]),
                    OffsetCommitRequestTopic::default().with_name(topic("u")),
                ])
                .with_unknown_tagged_fields(unknown);
            if v >= 7 {
                req = req.with_group_instance_id(Some(s("inst")));
            }
            if v <= 4 {
                req = req.with_retention_time_ms(86_400_000);
            }
            enc(req, v)
        }
        ApiKey::OffsetFetch => {
            use kafka_protocol::messages::offset_fetch_request::*;
            let mut req = OffsetFetchRequest::default().with_unknown_tagged_fields(unknown);
            if v <= 7 {
                let topics = if v >= 2 && v % 2 == 0 {
                    None
                } else {
                    Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(topic("t"))
                            .with_partition_indexes(vec![0, 1, 2]),
                        OffsetFetchRequestTopic::default().with_name(topic("u")),
                    ])
                };
                req = req.with_group_id(GroupId(s("grp"))).with_topics(topics);
            } else {
                let g = |id, topics| {
                    let g = OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(s(id)))
                        .with_topics(topics);
                    if v >= 9 {
                        g.with_member_id(Some(s("m"))).with_member_epoch(3)
                    } else {
                        g
                    }
                };
                let ts = Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![4, 5]),
                    OffsetFetchRequestTopics::default().with_name(topic("v")),
                ]);
                req = req.with_groups(vec![g("g1", ts), g("g2", None)]);
            }
            if v >= 7 {
                req = req.with_require_stable(true);
            }
            enc(req, v)
        }
        ApiKey::ListGroups => {
            let mut req = ListGroupsRequest::default().with_unknown_tagged_fields(unknown);
            if v >= 4 {
                req = req.with_states_filter(vec![s("Stable"), s("Empty")]);
            }
            if v >= 5 {
                req = req.with_types_filter(vec![s("classic"), s("consumer")]);
            }
            enc(req, v)
        }
        ApiKey::DescribeGroups => {
            let mut req = DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(s("a")), GroupId(s("bb")), GroupId(s(""))])
                .with_unknown_tagged_fields(unknown);
            if v >= 3 {
                req = req.with_include_authorized_operations(true);
            }
            enc(req, v)
        }
        ApiKey::DeleteGroups => {
            let req = DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(s("a")), GroupId(s("bb"))])
                .with_unknown_tagged_fields(unknown);
            enc(req, v)
        }
        ApiKey::OffsetDelete => {
            use kafka_protocol::messages::offset_delete_request::*;
            let p = |i| OffsetDeleteRequestPartition::default().with_partition_index(i);
            let req = OffsetDeleteRequest::default()
                .with_group_id(GroupId(s("grp")))
                .with_topics(vec![
                    OffsetDeleteRequestTopic::default()
                        .with_name(topic("t"))
                        .with_partitions(vec![p(0), p(9)]),
                    OffsetDeleteRequestTopic::default().with_name(topic("u")),
                ]);
            enc(req, v)
        }
        ApiKey::InitProducerId => {
            let mut req = InitProducerIdRequest::default()
                .with_transactional_id((v % 2 == 0).then(|| TransactionalId(s("txn"))))
                .with_transaction_timeout_ms(60000)
                .with_unknown_tagged_fields(unknown);
            if v >= 3 {
                req = req
                    .with_producer_id(ProducerId(1234))
                    .with_producer_epoch(2);
            }
            enc(req, v)
        }
        ApiKey::DeleteRecords => {
            use kafka_protocol::messages::delete_records_request::*;
            let p = |i| {
                DeleteRecordsPartition::default()
                    .with_partition_index(i)
                    .with_offset(100)
            };
            let req = DeleteRecordsRequest::default()
                .with_topics(vec![
                    DeleteRecordsTopic::default()
                        .with_name(topic("t"))
                        .with_partitions(vec![p(0), p(1)]),
                    DeleteRecordsTopic::default().with_name(topic("u")),
                ])
                .with_timeout_ms(5)
                .with_unknown_tagged_fields(unknown);
            enc(req, v)
        }
        ApiKey::AddPartitionsToTxn => {
            use kafka_protocol::messages::add_partitions_to_txn_request::*;
            let t = |name, ps: Vec<i32>| {
                AddPartitionsToTxnTopic::default()
                    .with_name(topic(name))
                    .with_partitions(ps)
            };
            let topics = vec![t("t", vec![0, 1]), t("u", vec![])];
            let req = AddPartitionsToTxnRequest::default().with_unknown_tagged_fields(unknown);
            let req = if v <= 3 {
                req.with_v3_and_below_transactional_id(TransactionalId(s("txn")))
                    .with_v3_and_below_producer_id(ProducerId(77))
                    .with_v3_and_below_producer_epoch(3)
                    .with_v3_and_below_topics(topics)
            } else {
                req.with_transactions(vec![
                    AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(TransactionalId(s("txn")))
                        .with_producer_id(ProducerId(77))
                        .with_producer_epoch(3)
                        .with_verify_only(true)
                        .with_topics(topics),
                    AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(TransactionalId(s("other"))),
                ])
            };
            enc(req, v)
        }
        ApiKey::AddOffsetsToTxn => enc(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("txn")))
                .with_producer_id(ProducerId(77))
                .with_producer_epoch(3)
                .with_group_id(GroupId(s("g")))
                .with_unknown_tagged_fields(unknown),
            v,
        ),
        ApiKey::TxnOffsetCommit => {
            use kafka_protocol::messages::txn_offset_commit_request::*;
            let p = |i| {
                let p = TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(i)
                    .with_committed_offset(42)
                    .with_committed_metadata(Some(s("meta")));
                if v >= 2 {
                    p.with_committed_leader_epoch(5)
                } else {
                    p
                }
            };
            let mut req = TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s("txn")))
                .with_group_id(GroupId(s("g")))
                .with_producer_id(ProducerId(77))
                .with_producer_epoch(3)
                .with_topics(vec![
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(topic("t"))
                        .with_partitions(vec![p(0), p(1)]),
                    TxnOffsetCommitRequestTopic::default().with_name(topic("u")),
                ])
                .with_unknown_tagged_fields(unknown);
            if v >= 3 {
                req = req
                    .with_generation_id(4)
                    .with_member_id(s("member"))
                    .with_group_instance_id(Some(s("instance")));
            }
            enc(req, v)
        }
        ApiKey::EndTxn => enc(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("txn")))
                .with_producer_id(ProducerId(77))
                .with_producer_epoch(3)
                .with_committed(true)
                .with_unknown_tagged_fields(unknown),
            v,
        ),
        ApiKey::ListTransactions => {
            let mut req = ListTransactionsRequest::default()
                .with_state_filters(vec![s("Ongoing"), s("Empty")])
                .with_producer_id_filters(vec![ProducerId(1), ProducerId(2)])
                .with_unknown_tagged_fields(unknown);
            if v >= 1 {
                req = req.with_duration_filter(1000);
            }
            if v >= 2 {
                req = req.with_transactional_id_pattern(Some(s("tx.*")));
            }
            enc(req, v)
        }
        ApiKey::DescribeTransactions => enc(
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("a")), TransactionalId(s("b"))])
                .with_unknown_tagged_fields(unknown),
            v,
        ),
        ApiKey::DescribeProducers => {
            use kafka_protocol::messages::describe_producers_request::*;
            enc(
                DescribeProducersRequest::default()
                    .with_topics(vec![TopicRequest::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![0, 3])])
                    .with_unknown_tagged_fields(unknown),
                v,
            )
        }
        ApiKey::WriteTxnMarkers => {
            use kafka_protocol::messages::write_txn_markers_request::*;
            enc(
                WriteTxnMarkersRequest::default()
                    .with_markers(vec![
                        WritableTxnMarker::default()
                            .with_producer_id(ProducerId(7))
                            .with_producer_epoch(2)
                            .with_transaction_result(true)
                            .with_coordinator_epoch(5)
                            .with_topics(vec![
                                WritableTxnMarkerTopic::default()
                                    .with_name(topic("t"))
                                    .with_partition_indexes(vec![0, 3])
                                    .with_unknown_tagged_fields(unknown.clone()),
                                WritableTxnMarkerTopic::default().with_name(topic("u")),
                            ]),
                        WritableTxnMarker::default().with_producer_id(ProducerId(8)),
                    ])
                    .with_unknown_tagged_fields(unknown),
                v,
            )
        }
        ApiKey::ElectLeaders => {
            use kafka_protocol::messages::elect_leaders_request::*;
            enc(
                ElectLeadersRequest::default()
                    .with_election_type(if v >= 1 { 1 } else { 0 })
                    .with_topic_partitions(Some(vec![
                        TopicPartitions::default()
                            .with_topic(topic("t"))
                            .with_partitions(vec![0, 3])
                            .with_unknown_tagged_fields(unknown.clone()),
                        TopicPartitions::default().with_topic(topic("u")),
                    ]))
                    .with_timeout_ms(30_000)
                    .with_unknown_tagged_fields(unknown),
                v,
            )
        }
        ApiKey::AlterPartitionReassignments => {
            use kafka_protocol::messages::alter_partition_reassignments_request::*;
            enc(
                AlterPartitionReassignmentsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_allow_replication_factor_change(v < 1)
                    .with_topics(vec![
                        ReassignableTopic::default()
                            .with_name(topic("t"))
                            .with_partitions(vec![
                                ReassignablePartition::default()
                                    .with_partition_index(0)
                                    .with_replicas(Some(vec![BrokerId(2), BrokerId(3)]))
                                    .with_unknown_tagged_fields(unknown.clone()),
                                ReassignablePartition::default().with_partition_index(1),
                            ]),
                        ReassignableTopic::default().with_name(topic("u")),
                    ])
                    .with_unknown_tagged_fields(unknown),
                v,
            )
        }
        ApiKey::ListPartitionReassignments => {
            use kafka_protocol::messages::list_partition_reassignments_request::*;
            enc(
                ListPartitionReassignmentsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
                        .with_name(topic("t"))
                        .with_partition_indexes(vec![0, 3])
                        .with_unknown_tagged_fields(unknown.clone())]))
                    .with_unknown_tagged_fields(unknown),
                v,
            )
        }
        ApiKey::DescribeTopicPartitions => {
            use kafka_protocol::messages::describe_topic_partitions_request::*;
            enc(
                DescribeTopicPartitionsRequest::default()
                    .with_topics(vec![
                        TopicRequest::default()
                            .with_name(topic("t"))
                            .with_unknown_tagged_fields(unknown.clone()),
                        TopicRequest::default().with_name(topic("u")),
                    ])
                    .with_response_partition_limit(100)
                    .with_cursor(Some(
                        Cursor::default()
                            .with_topic_name(topic("t"))
                            .with_partition_index(3)
                            .with_unknown_tagged_fields(unknown.clone()),
                    ))
                    .with_unknown_tagged_fields(unknown),
                v,
            )
        }
        ApiKey::AllocateProducerIds => enc(
            AllocateProducerIdsRequest::default()
                .with_broker_id(BrokerId(3))
                .with_broker_epoch(77)
                .with_unknown_tagged_fields(unknown),
            v,
        ),
        ApiKey::BrokerRegistration => {
            use kafka_protocol::messages::broker_registration_request::*;
            let mut req = BrokerRegistrationRequest::default()
                .with_broker_id(BrokerId(4))
                .with_cluster_id(s("cluster"))
                .with_incarnation_id(Default::default())
                .with_listeners(vec![Listener::default()
                    .with_name(s("PLAINTEXT"))
                    .with_host(s("127.0.0.1"))
                    .with_port(9092)])
                .with_features(vec![Feature::default()
                    .with_name(s("metadata.version"))
                    .with_min_supported_version(1)
                    .with_max_supported_version(20)])
                .with_rack(Some(s("r1")))
                .with_unknown_tagged_fields(unknown);
            if v >= 1 {
                req = req.with_is_migrating_zk_broker(false);
            }
            if v >= 2 {
                req = req.with_log_dirs(vec![Default::default(), Default::default()]);
            }
            if v >= 3 {
                req = req.with_previous_broker_epoch(17);
            }
            enc(req, v)
        }
        ApiKey::BrokerHeartbeat => {
            let mut req = BrokerHeartbeatRequest::default()
                .with_broker_id(BrokerId(4))
                .with_broker_epoch(12)
                .with_current_metadata_offset(99)
                .with_want_fence(true)
                .with_unknown_tagged_fields(unknown);
            if v >= 1 {
                req = req.with_offline_log_dirs(vec![Default::default()]);
            }
            enc(req, v)
        }
        ApiKey::OffsetForLeaderEpoch => {
            use kafka_protocol::messages::offset_for_leader_epoch_request::*;
            let part = |i: i32| {
                OffsetForLeaderPartition::default()
                    .with_partition(i)
                    .with_current_leader_epoch(4)
                    .with_leader_epoch(3)
                    .with_unknown_tagged_fields(unknown.clone())
            };
            let mut req = OffsetForLeaderEpochRequest::default()
                .with_topics(vec![
                    OffsetForLeaderTopic::default()
                        .with_topic(topic("t"))
                        .with_partitions(vec![part(0), part(2)]),
                    OffsetForLeaderTopic::default().with_topic(topic("u")),
                ])
                .with_unknown_tagged_fields(unknown.clone());
            if v >= 3 {
                req = req.with_replica_id(BrokerId(2));
            }
            enc(req, v)
        }
        ApiKey::AlterPartition => {
            use kafka_protocol::messages::alter_partition_request::*;
            let unknown_inner = unknown.clone();
            let part = |i: i32| {
                let p = PartitionData::default()
                    .with_partition_index(i)
                    .with_leader_epoch(5)
                    .with_leader_recovery_state(0)
                    .with_partition_epoch(9)
                    .with_unknown_tagged_fields(unknown_inner.clone());
                if v >= 3 {
                    p.with_new_isr_with_epochs(vec![
                        BrokerState::default()
                            .with_broker_id(BrokerId(1))
                            .with_broker_epoch(40),
                        BrokerState::default()
                            .with_broker_id(BrokerId(2))
                            .with_broker_epoch(-1)
                            .with_unknown_tagged_fields(unknown_inner.clone()),
                    ])
                } else {
                    p.with_new_isr(vec![BrokerId(1), BrokerId(2)])
                }
            };
            enc(
                AlterPartitionRequest::default()
                    .with_broker_id(BrokerId(1))
                    .with_broker_epoch(40)
                    .with_topics(vec![
                        TopicData::default()
                            .with_topic_id(uuid!(7))
                            .with_partitions(vec![part(0), part(3)]),
                        TopicData::default().with_topic_id(uuid!(8)),
                    ])
                    .with_unknown_tagged_fields(unknown),
                v,
            )
        }
        other => panic!("no test request for {other:?}"),
    }
}

fn frame(key: ApiKey, v: i16) -> Vec<u8> {
    let mut f = header(key, v);
    f.extend(body(key, v));
    f
}

/// Cut points to try: all of them for small frames, a spread sample otherwise.
fn cut_points(len: usize) -> Vec<usize> {
    if len <= 256 {
        return (0..len).collect();
    }
    let mut cuts: Vec<usize> = (0..64).chain(len - 64..len).collect();
    cuts.extend((64..len - 64).step_by(7));
    cuts
}

#[test]
fn served_schemas_cover_supported_table() {
    for r in crate::versions::SUPPORTED {
        for v in r.min..=r.max {
            assert!(
                schema::SERVED
                    .iter()
                    .any(|s| s.key == r.key && (s.min..=s.max).contains(&v)),
                "{:?} v{v} is served but has no layout in schema::SERVED",
                r.key
            );
        }
    }
    for s in schema::SERVED {
        assert!(
            crate::versions::supported_range(s.key).is_some(),
            "{:?} is in SERVED but not in versions::SUPPORTED; move it to EXTRA",
            s.key
        );
    }
    for s in schema::EXTRA {
        assert!(
            crate::versions::supported_range(s.key).is_none(),
            "{:?}",
            s.key
        );
    }
}

#[test]
fn schemas_agree_with_codec_on_versions_and_flexibility() {
    for s in all_schemas() {
        let range = crate::versions::codec_range(s.key);
        assert!(range.min <= s.min && s.max <= range.max, "{:?}", s.key);
        for v in s.min..=s.max {
            let header_v2 = s.key.request_header_version(v) >= 2;
            assert_eq!(header_v2, v >= s.flexible_from, "{:?} v{v}", s.key);
        }
    }
}

#[test]
fn accepts_every_valid_request_and_rejects_truncations() {
    let mut checked = 0;
    for (key, v) in all_pairs() {
        let f = frame(key, v);
        codec_decode(&f).unwrap_or_else(|e| panic!("codec rejects {key:?} v{v}: {e}"));
        check_any(&f, CAP).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
        let served = crate::versions::is_supported(key, v);
        match check_request(&f, CAP) {
            Ok(()) => assert!(served, "{key:?} v{v} accepted but not served"),
            Err(GuardError::UnsupportedVersion {
                api_key,
                api_version,
            }) => {
                assert!(!served, "{key:?} v{v} served but refused");
                assert_eq!((api_key, api_version), (key as i16, v));
            }
            Err(e) => panic!("{key:?} v{v}: {e}"),
        }
        // Trailing bytes are ignored, as the codec ignores them.
        let mut longer = f.clone();
        longer.extend_from_slice(b"\0\0\0");
        check_any(&longer, CAP).unwrap();
        for cut in cut_points(f.len()) {
            if check_any(&f[..cut], CAP).is_ok() {
                codec_decode(&f[..cut]).unwrap_or_else(|e| {
                    panic!("{key:?} v{v}: guard accepts a {cut}-byte prefix the codec rejects: {e}")
                });
            }
        }
        checked += 1;
    }
    assert!(checked > 120, "only {checked} versions checked");
}

#[test]
fn rejects_strict_prefixes_of_every_request() {
    // Bodies end with a required field or tagged section, so no strict prefix is complete.
    for (key, v) in all_pairs() {
        let f = frame(key, v);
        for cut in cut_points(f.len()) {
            assert!(
                check_any(&f[..cut], CAP).is_err(),
                "{key:?} v{v}: {cut}-byte prefix accepted"
            );
        }
    }
}

fn raw_header(key: i16, v: i16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(key.to_be_bytes());
    h.extend(v.to_be_bytes());
    h.extend(7i32.to_be_bytes());
    h.extend(3i16.to_be_bytes());
    h.extend(b"cli");
    if ApiKey::try_from(key).is_ok_and(|k| k.request_header_version(v) >= 2) {
        h.push(0);
    }
    h
}

fn malformed(frame: &[u8]) -> String {
    match check_request(frame, CAP) {
        Err(GuardError::Malformed(m)) => m,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn rejects_huge_classic_array_counts() {
    // Metadata v1: topics count.
    let mut f = raw_header(3, 1);
    f.extend(0x7fff_ffffi32.to_be_bytes());
    assert!(malformed(&f).contains("topics"));

    // Produce v3: null transactional id, acks, timeout, topic_data count.
    let mut f = raw_header(0, 3);
    f.extend((-1i16).to_be_bytes());
    f.extend((-1i16).to_be_bytes());
    f.extend(1000i32.to_be_bytes());
    f.extend(0x7fff_ffffi32.to_be_bytes());
    f.extend([0u8; 16]);
    assert!(malformed(&f).contains("topic_data"));

    // CreateTopics v2: topics count, then the same nested one level down.
    let mut f = raw_header(19, 2);
    f.extend(0x7fff_ffffi32.to_be_bytes());
    assert!(malformed(&f).contains("topics"));
    let mut f = raw_header(19, 2);
    f.extend(1i32.to_be_bytes());
    f.extend(1i16.to_be_bytes());
    f.extend(b"t");
    f.extend(1i32.to_be_bytes());
    f.extend(1i16.to_be_bytes());
    f.extend(0x7fff_ffffi32.to_be_bytes());
    f.extend([0u8; 12]);
    assert!(malformed(&f).contains("assignments"));

    // The count is checked against the element's minimal size, not against one byte each:
    // 4 int32 broker ids need 16 bytes.
    let mut f = raw_header(37, 0); // CreatePartitions v0
    f.extend(1i32.to_be_bytes());
    f.extend(1i16.to_be_bytes());
    f.extend(b"t");
    f.extend(3i32.to_be_bytes()); // count
    f.extend(1i32.to_be_bytes()); // one assignment
    f.extend(4i32.to_be_bytes()); // four broker ids ...
    f.extend([0u8; 15]); // ... but 15 bytes left
    assert!(malformed(&f).contains("broker_ids"));
    let last = f.len() - 1;
    f.extend([0u8; 1 + 4 + 1]);
    f[last] = 0;
    check_request(&f, CAP).unwrap();
}

#[test]
fn rejects_huge_and_overlong_compact_counts() {
    // Metadata v9: compact topics count of u32::MAX.
    let mut f = raw_header(3, 9);
    f.extend([0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0]);
    assert!(malformed(&f).contains("topics"));
    // A varint with a sixth byte.
    let mut f = raw_header(3, 9);
    f.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0, 0, 0]);
    assert!(malformed(&f).contains("longer than 5 bytes"));
    // A five-byte varint overflowing 32 bits.
    let mut f = raw_header(3, 9);
    f.extend([0x81, 0x80, 0x80, 0x80, 0x10, 0, 0, 0]);
    assert!(malformed(&f).contains("overflows"));
    // A non-minimal but in-range varint is what the codec reads too: 1 = empty array.
    let mut f = raw_header(3, 9);
    f.extend([0x81, 0x80, 0x00, 1, 1, 1, 0]);
    check_request(&f, CAP).unwrap();
    codec_decode(&f).unwrap();
    // Huge tagged-field count in the body and in the header.
    let mut f = raw_header(3, 9);
    f.extend([1, 1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(malformed(&f).contains("tagged"));
    let mut f = raw_header(3, 9);
    f.pop();
    f.extend([0xff, 0xff, 0xff, 0x7f, 1, 1, 1, 1, 0]);
    assert!(malformed(&f).contains("tagged"));
    // A tagged field claiming more bytes than exist.
    let mut f = raw_header(3, 9);
    f.extend([1, 1, 1, 1, 1, 5, 0x7f, 0]);
    assert!(malformed(&f).contains("size"));
    // Compact string length beyond the frame (DescribeCluster v0 has none; use ApiVersions v3).
    let mut f = raw_header(18, 3);
    f.extend([0xff, 0x7f, b'x', 1, 0]);
    assert!(malformed(&f).contains("client_software_name"));
}

#[test]
fn known_tagged_field_must_fill_its_size() {
    // Fetch v12 with tag 0 (cluster_id): the codec parses it in place, ignoring the size.
    let mut f = raw_header(1, 12);
    f.extend((-1i32).to_be_bytes());
    f.extend([0u8; 13]); // max_wait, min_bytes, max_bytes, isolation_level
    f.extend([0u8; 8]); // session id and epoch
    f.extend([1, 1, 1]); // empty topics, forgotten topics, rack id
    let good = [f.clone(), vec![1, 0, 3, 3, b'a', b'b']].concat();
    check_request(&[good.clone(), vec![0]].concat(), CAP).unwrap();
    let short = [f.clone(), vec![1, 0, 4, 3, b'a', b'b', 0, 0]].concat();
    assert!(malformed(&short).contains("shorter"));
    let long = [f.clone(), vec![1, 0, 2, 3, b'a', b'b', 0]].concat();
    assert!(malformed(&long).contains("cluster_id"));
}

#[test]
fn rejects_negative_lengths_other_than_null() {
    // Client id of length -2.
    let mut f = raw_header(18, 0);
    f.truncate(8);
    f.extend((-2i16).to_be_bytes());
    assert!(malformed(&f).contains("client_id"));
    // Metadata v1 topics count -5 (-1 is null and fine).
    let mut f = raw_header(3, 1);
    f.extend((-5i32).to_be_bytes());
    assert!(malformed(&f).contains("negative"));
    let mut f = raw_header(3, 1);
    f.extend((-1i32).to_be_bytes());
    check_request(&f, CAP).unwrap();
    // Produce v3 records length -7.
    let mut f = raw_header(0, 3);
    f.extend((-1i16).to_be_bytes());
    f.extend(1i16.to_be_bytes());
    f.extend(1000i32.to_be_bytes());
    f.extend(1i32.to_be_bytes());
    f.extend(1i16.to_be_bytes());
    f.extend(b"t");
    f.extend(1i32.to_be_bytes());
    f.extend(0i32.to_be_bytes());
    f.extend((-7i32).to_be_bytes());
    assert!(malformed(&f).contains("records"));
    // String length beyond the frame.
    let mut f = raw_header(3, 1);
    f.extend(1i32.to_be_bytes());
    f.extend(100i16.to_be_bytes());
    f.extend(b"abc");
    assert!(malformed(&f).contains("name"));
}

#[test]
fn enforces_the_decoded_memory_cap() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let n = 1000;
    let req = MetadataRequest::default().with_topics(Some(
        (0..n)
            .map(|_| MetadataRequestTopic::default().with_name(Some(topic("t"))))
            .collect(),
    ));
    let mut f = header(ApiKey::Metadata, 1);
    f.extend(enc(req, 1));
    check_request(&f, n * STRUCT_ELEMENT_BYTES).unwrap();
    let m = malformed_with_cap(&f, n * STRUCT_ELEMENT_BYTES - 1);
    assert!(m.contains("cap"), "{m}");

    // Nested arrays add up: 2 resources x 3 keys.
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_configuration_keys(Some(vec![s("a"), s("b"), s("c")]));
        2
    ]);
    let mut f = header(ApiKey::DescribeConfigs, 1);
    f.extend(enc(req, 1));
    let need = 2 * STRUCT_ELEMENT_BYTES + 6 * STRING_ELEMENT_BYTES;
    check_request(&f, need).unwrap();
    malformed_with_cap(&f, need - 1);
}

fn malformed_with_cap(frame: &[u8], cap: usize) -> String {
    match check_request(frame, cap) {
        Err(GuardError::Malformed(m)) => m,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn header_is_checked_before_the_version() {
    // Unknown api key with a good header: unsupported; with a broken header: malformed.
    let f = raw_header(9999, 0);
    assert_eq!(
        check_request(&f, CAP),
        Err(GuardError::UnsupportedVersion {
            api_key: 9999,
            api_version: 0
        })
    );
    assert!(matches!(
        check_request(&f[..f.len() - 1], CAP),
        Err(GuardError::Malformed(_))
    ));
    assert!(matches!(
        check_request(&[0, 3, 0], CAP),
        Err(GuardError::Malformed(_))
    ));
    assert!(matches!(
        check_request(&[], CAP),
        Err(GuardError::Malformed(_))
    ));
    // Known api, version outside the served range.
    for (key, v) in [(0, 2), (0, 13), (1, 13), (3, 13), (18, 5), (18, -1)] {
        assert_eq!(
            check_request(&raw_header(key, v), CAP),
            Err(GuardError::UnsupportedVersion {
                api_key: key,
                api_version: v
            })
        );
    }
    // A flexible header's tagged section is checked even for an unsupported version.
    let mut f = raw_header(18, 9);
    f.pop();
    f.push(5);
    assert!(matches!(
        check_request(&f, CAP),
        Err(GuardError::Malformed(_))
    ));
    // A version with a layout but beyond the served range is refused too.
    let f = frame(ApiKey::InitProducerId, 5);
    assert!(matches!(
        check_request(&f, CAP),
        Err(GuardError::UnsupportedVersion {
            api_key: 22,
            api_version: 5
        })
    ));
    // Readable messages.
    let e = check_request(&raw_header(9999, 0), CAP).unwrap_err();
    assert_eq!(e.to_string(), "unsupported request: api key 9999 version 0");
}

fn pair_and_tail() -> impl Strategy<Value = ((ApiKey, i16), Vec<u8>)> {
    let pairs = all_pairs();
    (
        prop::sample::select(pairs),
        prop::collection::vec(
            prop_oneof![
                3 => any::<u8>(),
                1 => Just(0u8),
                1 => Just(0xffu8),
                1 => 1u8..8,
            ],
            0..160,
        ),
    )
}

fn decode_never_panics(f: &[u8]) {
    let _ = codec_decode(f);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bodies_never_panic((pair, tail) in pair_and_tail()) {
        let (key, v) = pair;
        let mut f = header(key, v);
        f.extend(tail);
        if check_any(&f, CAP).is_ok() {
            decode_never_panics(&f);
        }
    }

    #[test]
    fn mutated_requests_agree_with_codec(
        pair in prop::sample::select(all_pairs()),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (key, v) = pair;
        let mut f = frame(key, v);
        for (i, b) in edits {
            let i = i.index(f.len());
            f[i] = b;
        }
        if truncate {
            f.truncate(cut.index(f.len() + 1));
        }
        match check_any(&f, usize::MAX) {
            Ok(()) => decode_never_panics(&f),
            Err(GuardError::UnsupportedVersion { .. }) => {}
            Err(GuardError::Malformed(m)) => {
                // The guard may be stricter than the codec only on encodings no client
                // produces: over-long varints and tagged fields of the wrong size; any
                // other refusal the codec must share. Not asked of the codec: array counts
                // the guard refuses, and frames past a varint or tag refusal (the codec
                // would read on into counts the guard never checked, and reserve memory
                // for them before failing: a mutated count asked it for 515 GB).
                let tolerated = ["array of", "varint", "tag"];
                if !tolerated.iter().any(|t| m.contains(t)) {
                    prop_assert!(codec_decode(&f).is_err(), "{key:?} v{v}: {m}");
                }
            }
        }
    }
}

#[test]
fn controller_requests_pass_only_the_controller_guard() {
    for (key, v) in [
        (ApiKey::BrokerRegistration, 4),
        (ApiKey::BrokerHeartbeat, 1),
        (ApiKey::AlterPartition, 2),
        (ApiKey::AlterPartition, 3),
    ] {
        let f = frame(key, v);
        check_controller_request(&f, CAP).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
        assert!(
            matches!(
                check_request(&f, CAP),
                Err(GuardError::UnsupportedVersion { .. })
            ),
            "{key:?} v{v} is not served to clients"
        );
    }
    // Outside the versions the codec decodes, and a client API on the controller path.
    for (key, v) in [(56, 1), (56, 4), (3, 1)] {
        assert!(matches!(
            check_controller_request(&raw_header(key, v), CAP),
            Err(GuardError::UnsupportedVersion { .. })
        ));
    }
    // AlterPartition v3: broker id, broker epoch, one topic (id, one partition: index,
    // leader epoch), then a new_isr_with_epochs count of about 2^28.
    let mut f = raw_header(56, 3);
    f.extend(1i32.to_be_bytes());
    f.extend(40i64.to_be_bytes());
    f.push(2);
    f.extend([7u8; 16]);
    f.push(2);
    f.extend(0i32.to_be_bytes());
    f.extend(5i32.to_be_bytes());
    f.extend([0xff, 0xff, 0xff, 0x7f]);
    f.extend([0u8; 32]);
    match check_controller_request(&f, CAP) {
        Err(GuardError::Malformed(m)) => assert!(m.contains("new_isr_with_epochs"), "{m}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}
