//! Requests real clients rarely or never send, built by hand: hostile frames, version
//! fallbacks, and APIs the rdkafka crate does not expose. After each bad request a normal
//! request must still succeed.

mod common;

use common::{start_broker, RawConnection};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn metadata_ok(conn: &mut RawConnection) {
    let r = conn.request(
        ApiKey::Metadata,
        12,
        &RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
    );
    let ResponseKind::Metadata(m) = r else {
        panic!("wrong response")
    };
    assert_eq!(m.brokers.len(), 1);
}

fn create_topic(conn: &mut RawConnection, name: &str) {
    create_topic_with(conn, name, 1)
}

fn create_topic_with(conn: &mut RawConnection, name: &str, partitions: i32) {
    let topic = create_topics_request::CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1);
    let r = conn.request(
        ApiKey::CreateTopics,
        7,
        &RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic])),
    );
    let ResponseKind::CreateTopics(r) = r else {
        panic!()
    };
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
}

/// One Produce v9 of `records` to `topic`/`partition` with `acks`; the partition's answer.
fn produce_v9(
    conn: &mut RawConnection,
    topic: &str,
    partition: i32,
    records: Option<bytes::Bytes>,
    acks: i16,
    timeout_ms: i32,
) -> produce_response::PartitionProduceResponse {
    let p = produce_request::PartitionProduceData::default()
        .with_index(partition)
        .with_records(records);
    let t = produce_request::TopicProduceData::default()
        .with_name(TopicName(s(topic)))
        .with_partition_data(vec![p]);
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![t]);
    let ResponseKind::Produce(mut r) = conn.request(ApiKey::Produce, 9, &RequestKind::Produce(req))
    else {
        panic!()
    };
    r.responses.remove(0).partition_responses.remove(0)
}

fn describe_topic_config(conn: &mut RawConnection, topic: &str, key: &str) -> Option<String> {
    let resource = describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s(topic))
        .with_configuration_keys(Some(vec![s(key)]));
    let r = conn.request(
        ApiKey::DescribeConfigs,
        4,
        &RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default().with_resources(vec![resource]),
        ),
    );
    let ResponseKind::DescribeConfigs(r) = r else {
        panic!()
    };
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .first()
        .and_then(|c| c.value.as_ref().map(|v| v.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("socket.request.max.bytes", "1048576")]).await;
    let addr = broker.local_addr;
    let mut healthy = RawConnection::connect(addr);
    metadata_ok(&mut healthy);
    let addr2 = addr;
    tokio::task::spawn_blocking(move || {
        // A frame length over socket.request.max.bytes.
        let mut c = RawConnection::connect(addr2);
        c.send_raw(&(200 * 1024 * 1024i32).to_be_bytes()).unwrap();
        assert!(c.is_closed_by_peer());
        // A negative frame length.
        let mut c = RawConnection::connect(addr2);
        c.send_raw(&(-1i32).to_be_bytes()).unwrap();
        assert!(c.is_closed_by_peer());
        // Garbage of a plausible length.
        let mut c = RawConnection::connect(addr2);
        let mut frame = 16i32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xff; 16]);
        c.send_raw(&frame).unwrap();
        assert!(c.is_closed_by_peer());
        // A Metadata v1 request of 14 bytes claiming 2^31-1 topics.
        let mut c = RawConnection::connect(addr2);
        let mut body = Vec::new();
        body.extend_from_slice(&3i16.to_be_bytes()); // Metadata
        body.extend_from_slice(&1i16.to_be_bytes()); // v1
        body.extend_from_slice(&7i32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
        body.extend_from_slice(&i32::MAX.to_be_bytes()); // topics count
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        c.send_raw(&frame).unwrap();
        assert!(c.is_closed_by_peer());
        // An unsupported Produce version closes the connection, as Kafka does.
        let mut c = RawConnection::connect(addr2);
        let mut body = Vec::new();
        body.extend_from_slice(&0i16.to_be_bytes()); // Produce
        body.extend_from_slice(&2i16.to_be_bytes()); // v2: message format v1, not served
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&[0, 1, 0, 0, 0, 100, 0, 0, 0, 0]);
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        c.send_raw(&frame).unwrap();
        assert!(c.is_closed_by_peer());
        // An unknown API key.
        let mut c = RawConnection::connect(addr2);
        let mut body = Vec::new();
        body.extend_from_slice(&999i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&9i32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        c.send_raw(&frame).unwrap();
        assert!(c.is_closed_by_peer());
        // The connection opened before all this still works.
        metadata_ok(&mut healthy);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_falls_back_to_v0_for_unknown_versions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        // ApiVersions v99: the body is unknown, the answer is a v0 response with error 35.
        let mut body = Vec::new();
        body.extend_from_slice(&18i16.to_be_bytes());
        body.extend_from_slice(&99i16.to_be_bytes());
        body.extend_from_slice(&42i32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        c.send_raw(&frame).unwrap();
        let mut resp = c.read_frame().unwrap();
        let header =
            <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut resp, 0).unwrap();
        assert_eq!(header.correlation_id, 42);
        let r = <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut resp, 0)
            .unwrap();
        assert_eq!(r.error_code, 35);
        assert!(r
            .api_keys
            .iter()
            .any(|k| k.api_key == 18 && k.max_version >= 3));
        // v3 works and advertises exactly the table, with no unexpected tagged fields.
        let r = c.request(
            ApiKey::ApiVersions,
            3,
            &RequestKind::ApiVersions(
                ApiVersionsRequest::default()
                    .with_client_software_name(s("raw"))
                    .with_client_software_version(s("1")),
            ),
        );
        let ResponseKind::ApiVersions(r) = r else {
            panic!()
        };
        assert_eq!(r.error_code, 0);
        assert_eq!(r.api_keys.len(), gregor_protocol::versions::SUPPORTED.len());
        // v3 lists no supported feature whose lowest level is 0, but the finalized
        // transaction.version (KIP-890 part 2) is there.
        assert!(r.supported_features.is_empty());
        let finalized: Vec<(String, i16)> = r
            .finalized_features
            .iter()
            .map(|f| (f.name.to_string(), f.max_version_level))
            .collect();
        assert_eq!(finalized, vec![("transaction.version".to_string(), 2)]);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_and_legacy_alter_configs() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        create_topic(&mut c, "inc");
        let alter = |c: &mut RawConnection,
                     ops: Vec<(&str, i8, Option<&str>)>,
                     validate_only: bool|
         -> (i16, Option<String>) {
            let configs = ops
                .into_iter()
                .map(|(k, op, v)| {
                    AlterableConfig::default()
                        .with_name(s(k))
                        .with_config_operation(op)
                        .with_value(v.map(s))
                })
                .collect();
            let resource = AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("inc"))
                .with_configs(configs);
            let req = IncrementalAlterConfigsRequest::default()
                .with_resources(vec![resource])
                .with_validate_only(validate_only);
            let ResponseKind::IncrementalAlterConfigs(r) = c.request(
                ApiKey::IncrementalAlterConfigs,
                1,
                &RequestKind::IncrementalAlterConfigs(req),
            ) else {
                panic!()
            };
            (
                r.responses[0].error_code,
                r.responses[0].error_message.as_ref().map(|m| m.to_string()),
            )
        };
        assert_eq!(
            alter(&mut c, vec![("retention.ms", 0, Some("1000"))], false).0,
            0
        );
        assert_eq!(
            describe_topic_config(&mut c, "inc", "retention.ms").as_deref(),
            Some("1000")
        );
        assert_eq!(
            alter(&mut c, vec![("cleanup.policy", 2, Some("compact"))], false).0,
            0
        );
        assert_eq!(
            describe_topic_config(&mut c, "inc", "cleanup.policy").as_deref(),
            Some("compact")
        );
        assert_eq!(
            alter(&mut c, vec![("cleanup.policy", 2, Some("delete"))], false).0,
            0
        );
        assert_eq!(
            describe_topic_config(&mut c, "inc", "cleanup.policy").as_deref(),
            Some("compact,delete")
        );
        assert_eq!(
            alter(&mut c, vec![("cleanup.policy", 3, Some("compact"))], false).0,
            0
        );
        assert_eq!(
            describe_topic_config(&mut c, "inc", "cleanup.policy").as_deref(),
            Some("delete")
        );
        // Delete goes back to the default; other keys stay.
        assert_eq!(alter(&mut c, vec![("cleanup.policy", 1, None)], false).0, 0);
        assert_eq!(
            describe_topic_config(&mut c, "inc", "retention.ms").as_deref(),
            Some("1000")
        );
        // validate_only changes nothing.
        assert_eq!(
            alter(&mut c, vec![("retention.ms", 0, Some("5"))], true).0,
            0
        );
        assert_eq!(
            describe_topic_config(&mut c, "inc", "retention.ms").as_deref(),
            Some("1000")
        );
        // Bad values and keys: INVALID_CONFIG (40) with a message naming the key.
        let (code, msg) = alter(&mut c, vec![("segment.bytes", 0, Some("tiny"))], false);
        assert_eq!(code, 40);
        assert!(msg.unwrap().contains("segment.bytes"));
        let (code, _) = alter(&mut c, vec![("no.such.key", 0, Some("1"))], false);
        assert_eq!(code, 40);
        let (code, _) = alter(&mut c, vec![("retention.ms", 2, Some("1"))], false);
        assert_eq!(code, 40, "APPEND on a non-list key");
        // Legacy AlterConfigs with a bad value.
        let resource = alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("inc"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(s("segment.bytes"))
                .with_value(Some(s("tiny")))]);
        let ResponseKind::AlterConfigs(r) = c.request(
            ApiKey::AlterConfigs,
            1,
            &RequestKind::AlterConfigs(
                AlterConfigsRequest::default().with_resources(vec![resource]),
            ),
        ) else {
            panic!()
        };
        assert_eq!(r.responses[0].error_code, 40);
        // Unknown topic.
        let resource = AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s("nope"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(s("retention.ms"))
                .with_value(Some(s("1")))]);
        let ResponseKind::IncrementalAlterConfigs(r) = c.request(
            ApiKey::IncrementalAlterConfigs,
            0,
            &RequestKind::IncrementalAlterConfigs(
                IncrementalAlterConfigsRequest::default().with_resources(vec![resource]),
            ),
        ) else {
            panic!()
        };
        assert_eq!(r.responses[0].error_code, 3);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("auto.create.topics.enable", "false")]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        create_topic(&mut c, "t");
        let produce = |c: &mut RawConnection,
                       topic: &str,
                       partition: i32,
                       records: Option<bytes::Bytes>,
                       acks: i16| {
            produce_v9(c, topic, partition, records, acks, 5000).error_code
        };
        let garbage = bytes::Bytes::from(vec![0u8; 100]);
        assert_eq!(
            produce(&mut c, "missing", 0, Some(garbage.clone()), 1),
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            produce(&mut c, "t", 7, Some(garbage.clone()), 1),
            3,
            "unknown partition"
        );
        assert_eq!(
            produce(&mut c, "t", 0, Some(garbage.clone()), 5),
            21,
            "INVALID_REQUIRED_ACKS"
        );
        assert_eq!(
            produce(&mut c, "t", 0, Some(garbage), 1),
            2,
            "CORRUPT_MESSAGE"
        );
        // Fetch from an unknown partition and out of range.
        let fetch_as =
            |c: &mut RawConnection, replica: i32, topic: &str, offset: i64, epoch: i32| {
                let p = fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1024)
                    .with_current_leader_epoch(epoch);
                let t = fetch_request::FetchTopic::default()
                    .with_topic(TopicName(s(topic)))
                    .with_partitions(vec![p]);
                let req = FetchRequest::default()
                    .with_max_wait_ms(100)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![t])
                    .with_replica_id(BrokerId(replica));
                let ResponseKind::Fetch(r) = c.request(ApiKey::Fetch, 12, &RequestKind::Fetch(req))
                else {
                    panic!()
                };
                let p = &r.responses[0].partitions[0];
                (p.error_code, p.records.as_ref().map(|b| b.len()))
            };
        let fetch = |c: &mut RawConnection, topic: &str, offset: i64, epoch: i32| {
            fetch_as(c, -1, topic, offset, epoch)
        };
        // A follower fetch from a broker that is not a replica (or from the leader itself)
        // is refused with NOT_LEADER_OR_FOLLOWER; the broker goes on serving.
        assert_eq!(fetch_as(&mut c, 99, "t", 0, -1).0, 6);
        assert_eq!(fetch_as(&mut c, 1, "t", 0, -1).0, 6);
        assert_eq!(fetch(&mut c, "missing", 0, -1).0, 3);
        assert_eq!(fetch(&mut c, "t", 5, -1).0, 1, "OFFSET_OUT_OF_RANGE");
        assert_eq!(
            fetch(&mut c, "t", 0, 3).0,
            75,
            "UNKNOWN_LEADER_EPOCH for a newer epoch"
        );
        // An empty partition answers with an empty (not null) record set after max_wait.
        assert_eq!(fetch(&mut c, "t", 0, -1), (0, Some(0)));
        metadata_ok(&mut c);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

/// One request per API with a topic and partition in it, so nested response fields are
/// filled, for the given version.
fn sample_request(key: ApiKey, version: i16, topic: &str) -> RequestKind {
    let name = || TopicName(s(topic));
    match key {
        ApiKey::Produce => {
            let p = produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from_static(&[0; 70])));
            let t = produce_request::TopicProduceData::default()
                .with_name(name())
                .with_partition_data(vec![p]);
            RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![t]),
            )
        }
        ApiKey::Fetch => {
            let p = fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_partition_max_bytes(1024);
            let t = fetch_request::FetchTopic::default()
                .with_topic(name())
                .with_partitions(vec![p]);
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(1)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![t]),
            )
        }
        ApiKey::ListOffsets => {
            let p = list_offsets_request::ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1);
            let t = list_offsets_request::ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![p]);
            RequestKind::ListOffsets(
                ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![t]),
            )
        }
        ApiKey::Metadata => {
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(name())),
            ])))
        }
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => {
            let t = create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(&format!("{topic}-new"))))
                .with_num_partitions(1)
                .with_replication_factor(1);
            RequestKind::CreateTopics(
                CreateTopicsRequest::default()
                    .with_topics(vec![t])
                    .with_validate_only(true),
            )
        }
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default()),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(topic)),
            ]))
        }
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(
            AlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(topic))]),
        ),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_validate_only(true)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(name())
                        .with_count(2),
                ]),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s(topic))]),
        ),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeQuorum => RequestKind::DescribeQuorum(DescribeQuorumRequest::default()),
        ApiKey::FindCoordinator if version >= 4 => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g"), s("h")]),
        ),
        ApiKey::FindCoordinator => {
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("g")))
        }
        // A member id nobody was given: answered at once with UNKNOWN_MEMBER_ID.
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(s("stranger"))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("m")),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("m")),
        ),
        ApiKey::LeaveGroup if version >= 3 => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(s("m"))
                ]),
        ),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("m")),
        ),
        ApiKey::OffsetCommit => {
            let p = offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1);
            let t = offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(name())
                .with_partitions(vec![p]);
            RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![t]),
            )
        }
        ApiKey::OffsetFetch => {
            let t = offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(name())
                .with_partition_indexes(vec![0, 1]);
            let g = offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(name())
                        .with_partition_indexes(vec![0]),
                ]));
            if version >= 8 {
                RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![g]))
            } else {
                RequestKind::OffsetFetch(
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(s("g")))
                        .with_topics(Some(vec![t])),
                )
            }
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
        ),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("nope"))]),
        ),
        ApiKey::OffsetDelete => {
            let t = offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(0),
                ]);
            RequestKind::OffsetDelete(
                OffsetDeleteRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(vec![t]),
            )
        }
        ApiKey::DeleteRecords => {
            let p = delete_records_request::DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(0);
            let t = delete_records_request::DeleteRecordsTopic::default()
                .with_name(name())
                .with_partitions(vec![p]);
            RequestKind::DeleteRecords(
                DeleteRecordsRequest::default()
                    .with_topics(vec![t])
                    .with_timeout_ms(1000),
            )
        }
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::AddPartitionsToTxn => {
            let t = add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(name())
                .with_partitions(vec![0]);
            let id = TransactionalId(s("sample-tx"));
            let r = AddPartitionsToTxnRequest::default();
            RequestKind::AddPartitionsToTxn(if version <= 3 {
                r.with_v3_and_below_transactional_id(id)
                    .with_v3_and_below_producer_id(ProducerId(1))
                    .with_v3_and_below_topics(vec![t])
            } else {
                r.with_transactions(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(id)
                        .with_producer_id(ProducerId(1))
                        .with_verify_only(true)
                        .with_topics(vec![t]),
                ])
            })
        }
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("sample-tx")))
                .with_producer_id(ProducerId(1))
                .with_group_id(GroupId(s("sample-group"))),
        ),
        ApiKey::TxnOffsetCommit => {
            let p = txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1);
            let t = txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                .with_name(name())
                .with_partitions(vec![p]);
            RequestKind::TxnOffsetCommit(
                TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s("sample-tx")))
                    .with_group_id(GroupId(s("sample-group")))
                    .with_producer_id(ProducerId(1))
                    .with_topics(vec![t]),
            )
        }
        ApiKey::EndTxn => RequestKind::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("sample-tx")))
                .with_producer_id(ProducerId(1))
                .with_committed(true),
        ),
        ApiKey::ListTransactions => {
            RequestKind::ListTransactions(ListTransactionsRequest::default())
        }
        ApiKey::DescribeTransactions => RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(s("sample-tx"))]),
        ),
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(name())
                    .with_partition_indexes(vec![0]),
            ]))
        }
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch_request(-1, &[(topic, 0, -1, 0)]),
        ),
        // A marker for a producer that never wrote here: the partition refuses it or takes
        // it, either way the request is answered.
        ApiKey::WriteTxnMarkers => {
            RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default().with_markers(vec![
                write_txn_markers_request::WritableTxnMarker::default()
                    .with_producer_id(ProducerId(424242))
                    .with_producer_epoch(0)
                    .with_transaction_result(false)
                    .with_topics(vec![
                        write_txn_markers_request::WritableTxnMarkerTopic::default()
                            .with_name(name())
                            .with_partition_indexes(vec![0]),
                    ]),
            ]))
        }
        // Partition 0 is led by its preferred (only) replica: ELECTION_NOT_NEEDED.
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(name())
                    .with_partitions(vec![0]),
            ])),
        ),
        // A one-broker cluster: to the same replica, nothing moves.
        ApiKey::AlterPartitionReassignments => RequestKind::AlterPartitionReassignments(
            AlterPartitionReassignmentsRequest::default().with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        alter_partition_reassignments_request::ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(Some(vec![BrokerId(1)])),
                    ]),
            ]),
        ),
        ApiKey::ListPartitionReassignments => RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default().with_topics(None),
        ),
        ApiKey::DescribeTopicPartitions => RequestKind::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::default().with_topics(vec![
                describe_topic_partitions_request::TopicRequest::default().with_name(name()),
            ]),
        ),
        other => panic!("no sample request for {other:?}"),
    }
}

/// An OffsetForLeaderEpoch request from `replica_id` for (topic, partition,
/// current_leader_epoch, leader_epoch) each.
fn offset_for_leader_epoch_request(
    replica_id: i32,
    partitions: &[(&str, i32, i32, i32)],
) -> OffsetForLeaderEpochRequest {
    use offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let topics = partitions
        .iter()
        .map(|(topic, partition, current, epoch)| {
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(*partition)
                    .with_current_leader_epoch(*current)
                    .with_leader_epoch(*epoch)])
        })
        .collect();
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_topics(topics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_answers_the_end_of_each_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("auto.create.topics.enable", "false")]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        create_topic(&mut c, "epochs");
        for values in [&[b"a" as &[u8], b"b", b"c"][..], &[b"d", b"e"]] {
            let batch = common::producer_batch(-1, -1, -1, values, false);
            assert_eq!(
                produce_v9(&mut c, "epochs", 0, Some(batch), -1, 5000).error_code,
                0
            );
        }
        // (error code, leader epoch, end offset) of each partition asked, at `version`.
        let ask = |c: &mut RawConnection,
                   version: i16,
                   replica_id: i32,
                   partitions: &[(&str, i32, i32, i32)]| {
            let req = offset_for_leader_epoch_request(replica_id, partitions);
            let ResponseKind::OffsetForLeaderEpoch(r) = c.request(
                ApiKey::OffsetForLeaderEpoch,
                version,
                &RequestKind::OffsetForLeaderEpoch(req),
            ) else {
                panic!()
            };
            assert_eq!(r.throttle_time_ms, 0);
            r.topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        (
                            t.topic.0.to_string(),
                            p.partition,
                            p.error_code,
                            p.leader_epoch,
                            p.end_offset,
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        for version in 2..=4 {
            // Epoch 0 is the leader's latest: its end is the LEO. A consumer, a follower
            // and the debug id are answered alike.
            for replica_id in [-1, -2, 7] {
                assert_eq!(
                    ask(&mut c, version, replica_id, &[("epochs", 0, 0, 0)]),
                    vec![("epochs".to_string(), 0, 0, 0, 5)],
                    "v{version} from {replica_id}"
                );
            }
            // Without a current leader epoch (-1) the check is skipped.
            assert_eq!(
                ask(&mut c, version, -1, &[("epochs", 0, -1, 0)]),
                vec![("epochs".to_string(), 0, 0, 0, 5)]
            );
            let answers = ask(
                &mut c,
                version,
                -1,
                &[
                    // A current leader epoch newer than the leader's: UNKNOWN_LEADER_EPOCH.
                    ("epochs", 0, 3, 0),
                    // An epoch newer than any the log has: UNDEFINED, without an error.
                    ("epochs", 0, 0, 3),
                    // An unknown topic and an unknown partition.
                    ("missing", 0, -1, 0),
                    ("epochs", 4, -1, 0),
                ],
            );
            assert_eq!(
                answers,
                vec![
                    ("epochs".to_string(), 0, 75, -1, -1),
                    ("epochs".to_string(), 0, 0, -1, -1),
                    ("missing".to_string(), 0, 3, -1, -1),
                    ("epochs".to_string(), 4, 3, -1, -1),
                ],
                "v{version}"
            );
        }
        // A v4 request claiming about 2^28 topics in a few bytes: the guard closes the
        // connection before anything is decoded, and the broker serves on.
        let mut hostile = RawConnection::connect(addr);
        let mut body = Vec::new();
        body.extend_from_slice(&23i16.to_be_bytes()); // OffsetForLeaderEpoch
        body.extend_from_slice(&4i16.to_be_bytes()); // v4 (flexible)
        body.extend_from_slice(&11i32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
        body.push(0); // no header tags
        body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]); // topics count
        body.extend_from_slice(&[0; 8]);
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        hostile.send_raw(&frame).unwrap();
        assert!(hostile.is_closed_by_peer());
        assert_eq!(
            ask(&mut c, 4, -1, &[("epochs", 0, 0, 0)]),
            vec![("epochs".to_string(), 0, 0, 0, 5)]
        );
        metadata_ok(&mut c);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        create_topic(&mut c, "versions");
        for range in gregor_protocol::versions::SUPPORTED {
            for version in range.min..=range.max {
                // `request` asserts the correlation id and that the response decodes; an
                // encoding failure on the broker would close the connection instead.
                let _ = c.request(
                    range.key,
                    version,
                    &sample_request(range.key, version, "versions"),
                );
            }
        }
        metadata_ok(&mut c);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_produce_dedupes_and_checks_sequences_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let port = broker.local_addr.port();
    let addr = broker.local_addr;
    let produce = |c: &mut RawConnection, batch: bytes::Bytes| -> (i16, i64) {
        let p = produce_v9(c, "idem", 0, Some(batch), -1, 5000);
        (p.error_code, p.base_offset)
    };
    let init = |c: &mut RawConnection, id: i64, epoch: i16| -> (i16, i64, i16) {
        let req = InitProducerIdRequest::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch)
            .with_transaction_timeout_ms(60_000);
        let ResponseKind::InitProducerId(r) =
            c.request(ApiKey::InitProducerId, 4, &RequestKind::InitProducerId(req))
        else {
            panic!()
        };
        (r.error_code, r.producer_id.0, r.producer_epoch)
    };
    let pid = tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        create_topic(&mut c, "idem");
        let (e, pid, epoch) = init(&mut c, -1, -1);
        assert_eq!((e, epoch), (0, 0));
        let (_, other, _) = init(&mut c, -1, -1);
        assert_ne!(other, pid, "every producer gets its own id");
        let batch = common::idempotent_batch(pid, 0, 0, &[b"a", b"b", b"c"]);
        assert_eq!(produce(&mut c, batch.clone()), (0, 0));
        assert_eq!(
            produce(&mut c, batch),
            (0, 0),
            "a retried batch gets its original offset"
        );
        assert_eq!(
            produce(&mut c, common::idempotent_batch(pid, 0, 5, &[b"gap"])).0,
            45,
            "OUT_OF_ORDER_SEQUENCE_NUMBER"
        );
        assert_eq!(
            produce(&mut c, common::idempotent_batch(pid, 0, 3, &[b"d"])),
            (0, 3)
        );
        assert_eq!(
            produce(&mut c, common::idempotent_batch(99_999, 0, 7, &[b"x"])).0,
            59,
            "UNKNOWN_PRODUCER_ID"
        );
        // KIP-360: the same id at the next epoch, starting again at sequence 0.
        assert_eq!(init(&mut c, pid, 0), (0, pid, 1));
        assert_eq!(
            produce(&mut c, common::idempotent_batch(pid, 1, 0, &[b"e"])),
            (0, 4)
        );
        assert_eq!(
            produce(&mut c, common::idempotent_batch(pid, 0, 4, &[b"old"])).0,
            47,
            "INVALID_PRODUCER_EPOCH"
        );
        pid
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
    // After a restart the producer state is rebuilt: a retry is still recognised.
    let broker = common::restart_broker(dir.path(), port, &[]).await;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        assert_eq!(
            produce(&mut c, common::idempotent_batch(pid, 1, 0, &[b"e"])),
            (0, 4)
        );
        assert_eq!(
            produce(&mut c, common::idempotent_batch(pid, 1, 1, &[b"f"])),
            (0, 5)
        );
        let (_, next, _) = init(&mut c, -1, -1);
        assert!(next > pid + 1, "ids are not reused after a restart");
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_needs_min_insync_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        let config = create_topics_request::CreatableTopicConfig::default()
            .with_name(s("min.insync.replicas"))
            .with_value(Some(s("2")));
        let topic = create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s("strict")))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![config]);
        let ResponseKind::CreateTopics(r) = c.request(
            ApiKey::CreateTopics,
            7,
            &RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic])),
        ) else {
            panic!()
        };
        assert_eq!(r.topics[0].error_code, 0);
        let produce = |c: &mut RawConnection, acks: i16| {
            let batch = common::idempotent_batch(-1, -1, -1, &[b"v"]);
            produce_v9(c, "strict", 0, Some(batch), acks, 1000).error_code
        };
        assert_eq!(
            produce(&mut c, -1),
            19,
            "NOT_ENOUGH_REPLICAS: one in-sync replica, two required"
        );
        assert_eq!(produce(&mut c, 1), 0, "acks=1 does not need the ISR");
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_topics_asking_for_too_many_partitions_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        let topic = |name: &str, partitions: i32| {
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(name)))
                .with_num_partitions(partitions)
                .with_replication_factor(1)
        };
        let started = std::time::Instant::now();
        // One topic of 100,000,000 partitions; then 6,000 + 6,000, over the bound together
        // (validate only: this broker does not host 6,000 partitions in one go).
        let request = CreateTopicsRequest::default()
            .with_validate_only(true)
            .with_topics(vec![
                topic("huge", 100_000_000),
                topic("first", 6_000),
                topic("second", 6_000),
            ]);
        let ResponseKind::CreateTopics(r) =
            c.request(ApiKey::CreateTopics, 7, &RequestKind::CreateTopics(request))
        else {
            panic!()
        };
        let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(
            codes[0], 44,
            "POLICY_VIOLATION: {:?}",
            r.topics[0].error_message
        );
        assert!(r.topics[0]
            .error_message
            .as_ref()
            .is_some_and(|m| m.contains("10000")));
        assert_eq!(codes[1], 0, "{:?}", r.topics[1].error_message);
        assert_eq!(codes[2], 44, "the request's total is bounded too");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "refused before any work: {:?}",
            started.elapsed()
        );
        // The broker goes on serving at once.
        let other_started = std::time::Instant::now();
        create_topic(&mut RawConnection::connect(addr), "normal");
        metadata_ok(&mut c);
        assert!(other_started.elapsed() < std::time::Duration::from_secs(1));
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_answers_each_partition_with_kafkas_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        create_topic(&mut c, "el");
        let elect = |c: &mut RawConnection, kind: i8, partitions: Option<Vec<(&str, i32)>>| {
            let topics = partitions.map(|ps| {
                ps.into_iter()
                    .map(|(t, p)| {
                        elect_leaders_request::TopicPartitions::default()
                            .with_topic(TopicName(s(t)))
                            .with_partitions(vec![p])
                    })
                    .collect()
            });
            let request = ElectLeadersRequest::default()
                .with_election_type(kind)
                .with_topic_partitions(topics)
                .with_timeout_ms(5000);
            match c.request(ApiKey::ElectLeaders, 2, &RequestKind::ElectLeaders(request)) {
                ResponseKind::ElectLeaders(r) => {
                    let per: Vec<(String, i32, i16)> = r
                        .replica_election_results
                        .iter()
                        .flat_map(|t| {
                            t.partition_result
                                .iter()
                                .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
                        })
                        .collect();
                    (r.error_code, per)
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        let not_needed = kafka_protocol::error::ResponseError::ElectionNotNeeded.code();
        let unknown = kafka_protocol::error::ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            elect(&mut c, 0, Some(vec![("el", 0), ("el", 9), ("nope", 0)])),
            (
                0,
                vec![
                    ("el".into(), 0, not_needed),
                    ("el".into(), 9, unknown),
                    ("nope".into(), 0, unknown)
                ]
            )
        );
        assert_eq!(elect(&mut c, 1, Some(vec![("el", 0)])).1[0].2, not_needed);
        // All partitions: only those that needed an election are answered.
        assert_eq!(elect(&mut c, 0, None), (0, vec![]));
        let invalid = kafka_protocol::error::ResponseError::InvalidRequest.code();
        assert_eq!(
            elect(&mut c, 7, Some(vec![("el", 0)])),
            (invalid, vec![("el".into(), 0, invalid)])
        );
        metadata_ok(&mut c);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reassignments_get_kafkas_errors_and_change_nothing() {
    use alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        create_topic(&mut c, "ra");
        let alter =
            |c: &mut RawConnection, items: Vec<(&str, i32, Option<Vec<i32>>)>, allow_rf: bool| {
                let topics = items
                    .into_iter()
                    .map(|(t, p, r)| {
                        ReassignableTopic::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(vec![ReassignablePartition::default()
                                .with_partition_index(p)
                                .with_replicas(r.map(|r| r.into_iter().map(BrokerId).collect()))])
                    })
                    .collect();
                let request = AlterPartitionReassignmentsRequest::default()
                    .with_timeout_ms(5000)
                    .with_allow_replication_factor_change(allow_rf)
                    .with_topics(topics);
                let kind = RequestKind::AlterPartitionReassignments(request);
                match c.request(ApiKey::AlterPartitionReassignments, 1, &kind) {
                    ResponseKind::AlterPartitionReassignments(r) => r
                        .responses
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                        .collect::<Vec<i16>>(),
                    other => panic!("unexpected {other:?}"),
                }
            };
        use kafka_protocol::error::ResponseError as E;
        let invalid = E::InvalidReplicaAssignment.code();
        for (item, want) in [
            (("ra", 0, Some(vec![1, 7])), invalid),
            (("ra", 0, Some(vec![1, 1])), invalid),
            (("ra", 0, Some(vec![])), invalid),
            (("ra", 4, Some(vec![1])), E::UnknownTopicOrPartition.code()),
            (
                ("nope", 0, Some(vec![1])),
                E::UnknownTopicOrPartition.code(),
            ),
            (("ra", 0, None), E::NoReassignmentInProgress.code()),
        ] {
            assert_eq!(
                alter(&mut c, vec![item.clone()], true),
                vec![want],
                "{item:?}"
            );
        }
        // A partition named twice in one request.
        assert_eq!(
            alter(
                &mut c,
                vec![("ra", 0, Some(vec![1])), ("ra", 0, Some(vec![1]))],
                true
            ),
            vec![0, E::InvalidRequest.code()]
        );
        // KIP-860: a replica count change the client does not allow.
        assert_eq!(
            alter(&mut c, vec![("ra", 0, Some(vec![1, 2]))], false),
            vec![E::InvalidReplicationFactor.code()]
        );
        let list = RequestKind::ListPartitionReassignments(
            ListPartitionReassignmentsRequest::default().with_topics(None),
        );
        match c.request(ApiKey::ListPartitionReassignments, 0, &list) {
            ResponseKind::ListPartitionReassignments(r) => {
                assert_eq!(r.error_code, 0);
                assert!(r.topics.is_empty(), "nothing moves: {:?}", r.topics);
            }
            other => panic!("unexpected {other:?}"),
        }
        metadata_ok(&mut c);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_topic_partitions_pages_with_a_cursor() {
    use describe_topic_partitions_request::{Cursor, TopicRequest};
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawConnection::connect(addr);
        create_topic_with(&mut c, "pa", 3);
        create_topic_with(&mut c, "pb", 3);
        let describe =
            |c: &mut RawConnection, names: &[&str], limit: i32, cursor: Option<(&str, i32)>| {
                let request = DescribeTopicPartitionsRequest::default()
                    .with_topics(
                        names
                            .iter()
                            .map(|n| TopicRequest::default().with_name(TopicName(s(n))))
                            .collect(),
                    )
                    .with_response_partition_limit(limit)
                    .with_cursor(cursor.map(|(t, p)| {
                        Cursor::default()
                            .with_topic_name(TopicName(s(t)))
                            .with_partition_index(p)
                    }));
                let kind = RequestKind::DescribeTopicPartitions(request);
                match c.request(ApiKey::DescribeTopicPartitions, 0, &kind) {
                    ResponseKind::DescribeTopicPartitions(r) => {
                        let got: Vec<(String, i16, Vec<i32>)> = r
                            .topics
                            .iter()
                            .map(|t| {
                                (
                                    t.name.as_ref().unwrap().0.to_string(),
                                    t.error_code,
                                    t.partitions.iter().map(|p| p.partition_index).collect(),
                                )
                            })
                            .collect();
                        let next = r
                            .next_cursor
                            .map(|c| (c.topic_name.0.to_string(), c.partition_index));
                        (got, next)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            };
        let pa = |ps: Vec<i32>| ("pa".to_string(), 0, ps);
        let pb = |ps: Vec<i32>| ("pb".to_string(), 0, ps);
        // Everything, in name order, in one page.
        let (all, next) = describe(&mut c, &[], 0, None);
        assert_eq!(
            (all, next),
            (vec![pa(vec![0, 1, 2]), pb(vec![0, 1, 2])], None)
        );
        // Pages of 4, then on from the cursor.
        let (first, next) = describe(&mut c, &["pb", "pa"], 4, None);
        assert_eq!(first, vec![pa(vec![0, 1, 2]), pb(vec![0])]);
        assert_eq!(next, Some(("pb".to_string(), 1)));
        let (second, next) = describe(&mut c, &["pb", "pa"], 4, Some(("pb", 1)));
        assert_eq!((second, next), (vec![pb(vec![1, 2])], None));
        // A page ending with a topic points at the next one.
        let (_, next) = describe(&mut c, &[], 3, None);
        assert_eq!(next, Some(("pb".to_string(), 0)));
        // Unknown and invalid names; a cursor outside the topics asked for.
        let (bad, _) = describe(&mut c, &["nope", "bad name"], 0, None);
        let codes: Vec<i16> = bad.iter().map(|t| t.1).collect();
        use kafka_protocol::error::ResponseError as E;
        assert_eq!(
            codes,
            vec![
                E::InvalidTopicException.code(),
                E::UnknownTopicOrPartition.code()
            ]
        );
        let (refused, _) = describe(&mut c, &["pa"], 0, Some(("pb", 0)));
        assert_eq!(refused[0].1, E::InvalidRequest.code());
        metadata_ok(&mut c);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
