//! Admin client tests against a real in-process Gregor broker.

mod common;

use common::{config, start_broker};

use std::time::{Duration, Instant};

use gregor_broker::BrokerHandle;
use gregor_client::consumer::Consumer;
use gregor_client::{
    AdminClient, AlterConfigOp, ClientConfig, ConfigError, ConfigResource, ConfigSource, Error,
    ItemResult, NewTopic, OffsetSpec, Producer, ProducerRecord,
};

fn admin(broker: &BrokerHandle) -> AdminClient {
    AdminClient::new(&config(
        broker,
        &[
            ("client.id", "admin-test"),
            ("default.api.timeout.ms", "20000"),
        ],
    ))
    .unwrap()
}

/// The error name of a failed item, panicking on success.
fn err_name<T: std::fmt::Debug>(r: &ItemResult<T>) -> &str {
    match r {
        Err(e) => &e.name,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

async fn produce(broker: &BrokerHandle, topic: &str, partition: i32, n: usize) {
    let producer = Producer::new(&config(broker, &[])).unwrap();
    let mut futs = Vec::new();
    for i in 0..n {
        futs.push(
            producer
                .send(ProducerRecord::new(topic, format!("v{i}")).with_partition(partition))
                .await
                .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap();
    }
    producer.close(Duration::from_secs(5)).await.unwrap();
}

#[test]
fn config_errors_name_the_key() {
    let e = AdminClient::new(&ClientConfig::from_pairs([
        ("bootstrap.servers", "localhost:9092"),
        ("linger.ms", "5"),
    ]))
    .unwrap_err();
    assert!(
        matches!(&e, Error::Config(ConfigError::Unknown(k)) if k == "linger.ms"),
        "{e}"
    );
    let e = AdminClient::new(&ClientConfig::from_pairs([
        ("bootstrap.servers", "localhost:9092"),
        ("default.api.timeout.ms", "soon"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("`default.api.timeout.ms`"), "{e}");
    let e = AdminClient::new(&ClientConfig::new()).unwrap_err();
    assert!(e.to_string().contains("bootstrap.servers"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_admin_versions() {
    use gregor_client::connection::Connection;
    use kafka_protocol::messages::ApiKey;
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("offsets.topic.num.partitions", "1")]).await;
    let conn = Connection::connect(&broker.local_addr.to_string(), "t", Duration::from_secs(5))
        .await
        .unwrap();
    for (key, version) in [
        (ApiKey::CreateTopics, 7),
        (ApiKey::DeleteTopics, 6),
        (ApiKey::CreatePartitions, 3),
        (ApiKey::DescribeConfigs, 4),
        (ApiKey::IncrementalAlterConfigs, 1),
        (ApiKey::DescribeCluster, 1),
        (ApiKey::ListGroups, 5),
        (ApiKey::DescribeGroups, 5),
        (ApiKey::DeleteGroups, 2),
        (ApiKey::OffsetDelete, 0),
        (ApiKey::ListOffsets, 7),
        (ApiKey::DeleteRecords, 2),
    ] {
        assert_eq!(conn.version(key), Some(version), "{key:?}");
    }
    drop(conn);
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_partitions_configs_and_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("offsets.topic.num.partitions", "1")]).await;
    let admin = admin(&broker);

    // describe_cluster
    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster.brokers.len(), 1);
    let (broker_id, host, port) = cluster.brokers[0].clone();
    assert_eq!(cluster.controller_id, broker_id);
    assert_eq!(format!("{host}:{port}"), broker.local_addr.to_string());
    assert!(!cluster.cluster_id.is_empty());

    // validate_only creates nothing.
    let r = admin
        .create_topics(vec![NewTopic::new("t-validate", 2, 1)], true)
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].1.is_ok(), "{r:?}");
    assert!(!admin
        .list_topics(false)
        .await
        .unwrap()
        .contains(&"t-validate".to_string()));

    // create, with a config; the same name again and a bad config value fail per item.
    let r = admin
        .create_topics(
            vec![
                NewTopic::new("t1", 2, 1).with_config("retention.ms", "123456"),
                NewTopic::new("t2", 1, 1),
            ],
            false,
        )
        .await
        .unwrap();
    assert!(r.iter().all(|(_, res)| res.is_ok()), "{r:?}");
    let r = admin
        .create_topics(
            vec![
                NewTopic::new("t1", 2, 1),
                NewTopic::new("t3", 1, 1).with_config("retention.ms", "not-a-number"),
            ],
            false,
        )
        .await
        .unwrap();
    let t1 = r.iter().find(|(n, _)| n == "t1").unwrap();
    assert_eq!(err_name(&t1.1), "TOPIC_ALREADY_EXISTS");
    assert_eq!(t1.1.as_ref().unwrap_err().code, 36);
    let t3 = r.iter().find(|(n, _)| n == "t3").unwrap();
    assert_eq!(err_name(&t3.1), "INVALID_CONFIG");

    // list_topics
    let topics = admin.list_topics(false).await.unwrap();
    assert!(topics.contains(&"t1".to_string()) && topics.contains(&"t2".to_string()));
    assert!(!topics.contains(&"t3".to_string()));
    assert!(topics.iter().all(|t| !t.starts_with("__")), "{topics:?}");
    let all = admin.list_topics(true).await.unwrap();
    assert!(all.len() >= topics.len());

    // describe_topics
    let d = admin
        .describe_topics(vec!["t1".into(), "nope".into()])
        .await
        .unwrap();
    let t1 = d[0].1.as_ref().unwrap();
    assert_eq!(t1.name, "t1");
    assert!(!t1.internal);
    assert!(!t1.topic_id.is_empty());
    assert_eq!(t1.partitions.len(), 2);
    for (i, p) in t1.partitions.iter().enumerate() {
        assert_eq!(p.partition, i as i32);
        assert_eq!(p.leader, broker_id);
        assert_eq!(p.replicas, vec![broker_id]);
        assert_eq!(p.isr, vec![broker_id]);
    }
    assert_eq!(d[1].0, "nope");
    assert_eq!(err_name(&d[1].1), "UNKNOWN_TOPIC_OR_PARTITION");

    // create_partitions: grow, then shrinking is INVALID_PARTITIONS.
    admin.create_partitions("t1", 4).await.unwrap();
    let d = admin.describe_topics(vec!["t1".into()]).await.unwrap();
    assert_eq!(d[0].1.as_ref().unwrap().partitions.len(), 4);
    let e = admin.create_partitions("t1", 2).await.unwrap_err();
    assert_eq!(
        e.response_error(),
        Some(kafka_protocol::error::ResponseError::InvalidPartitions),
        "{e}"
    );

    // describe_configs: the topic override and a default.
    let topic = ConfigResource::Topic("t1".into());
    let entries = admin.describe_configs(topic.clone()).await.unwrap();
    let retention = entries.iter().find(|e| e.name == "retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("123456"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    assert!(!retention.is_default);
    let cleanup = entries.iter().find(|e| e.name == "cleanup.policy").unwrap();
    assert!(cleanup.is_default, "{cleanup:?}");

    // alter_configs_incremental: set, delete, append; a bad value is INVALID_CONFIG.
    admin
        .alter_configs_incremental(
            topic.clone(),
            vec![
                AlterConfigOp::Set("segment.bytes".into(), "1048576".into()),
                AlterConfigOp::Delete("retention.ms".into()),
            ],
        )
        .await
        .unwrap();
    let entries = admin.describe_configs(topic.clone()).await.unwrap();
    let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap().clone();
    assert_eq!(get("segment.bytes").value.as_deref(), Some("1048576"));
    assert!(!get("segment.bytes").is_default);
    assert!(get("retention.ms").is_default, "{:?}", get("retention.ms"));
    let e = admin
        .alter_configs_incremental(
            topic.clone(),
            vec![AlterConfigOp::Set("retention.ms".into(), "forever".into())],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.response_error(),
        Some(kafka_protocol::error::ResponseError::InvalidConfig),
        "{e}"
    );
    admin
        .alter_configs_incremental(
            topic.clone(),
            vec![AlterConfigOp::Append(
                "cleanup.policy".into(),
                "compact".into(),
            )],
        )
        .await
        .unwrap();
    let entries = admin.describe_configs(topic.clone()).await.unwrap();
    let policy = entries.iter().find(|e| e.name == "cleanup.policy").unwrap();
    assert!(
        policy.value.as_deref().unwrap().contains("compact"),
        "{policy:?}"
    );
    admin
        .alter_configs_incremental(
            topic.clone(),
            vec![AlterConfigOp::Subtract(
                "cleanup.policy".into(),
                "compact".into(),
            )],
        )
        .await
        .unwrap();

    // Broker configs.
    let entries = admin
        .describe_configs(ConfigResource::Broker(broker_id))
        .await
        .unwrap();
    assert!(!entries.is_empty());

    // delete_topics, including an unknown one.
    let r = admin
        .delete_topics(vec!["t2".into(), "nope".into()])
        .await
        .unwrap();
    let t2 = r.iter().find(|(n, _)| n == "t2").unwrap();
    assert!(t2.1.is_ok(), "{r:?}");
    let nope = r.iter().find(|(n, _)| n == "nope").unwrap();
    assert_eq!(err_name(&nope.1), "UNKNOWN_TOPIC_OR_PARTITION");
    assert!(!admin
        .list_topics(false)
        .await
        .unwrap()
        .contains(&"t2".to_string()));

    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("offsets.topic.num.partitions", "1")]).await;
    let admin = admin(&broker);
    admin
        .create_topics(vec![NewTopic::new("lo", 2, 1)], false)
        .await
        .unwrap();
    produce(&broker, "lo", 0, 10).await;

    let r = admin
        .list_offsets(vec![
            ("lo".into(), 0, OffsetSpec::Latest),
            ("lo".into(), 1, OffsetSpec::Latest),
            ("lo".into(), 7, OffsetSpec::Latest),
            ("none".into(), 0, OffsetSpec::Earliest),
        ])
        .await
        .unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r[0].2.as_ref().unwrap().0, 10);
    assert_eq!(r[1].2.as_ref().unwrap().0, 0);
    assert_eq!(err_name(&r[2].2), "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!((r[3].0.as_str(), r[3].1), ("none", 0));
    assert_eq!(err_name(&r[3].2), "UNKNOWN_TOPIC_OR_PARTITION");
    // Listing offsets never auto-creates the topic.
    assert!(!admin
        .list_topics(true)
        .await
        .unwrap()
        .contains(&"none".to_string()));

    let one = |spec| {
        let admin = &admin;
        async move {
            admin
                .list_offsets(vec![("lo".into(), 0, spec)])
                .await
                .unwrap()[0]
                .2
                .clone()
                .unwrap()
        }
    };
    assert_eq!(one(OffsetSpec::Earliest).await.0, 0);
    assert_eq!(one(OffsetSpec::Latest).await.0, 10);
    let (offset, ts) = one(OffsetSpec::MaxTimestamp).await;
    assert!((0..10).contains(&offset), "{offset}");
    assert!(ts > 0);
    assert_eq!(one(OffsetSpec::Timestamp(0)).await.0, 0);
    assert_eq!(one(OffsetSpec::Timestamp(i64::MAX / 2)).await.0, -1);

    // delete_records
    let r = admin
        .delete_records(vec![("lo".into(), 0, 4), ("lo".into(), 9, 1)])
        .await
        .unwrap();
    assert_eq!(r[0].2, Ok(4));
    assert_eq!(err_name(&r[1].2), "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(one(OffsetSpec::Earliest).await.0, 4);
    let r = admin
        .delete_records(vec![("lo".into(), 0, 50)])
        .await
        .unwrap();
    assert_eq!(err_name(&r[0].2), "OFFSET_OUT_OF_RANGE");

    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[("offsets.topic.num.partitions", "1")]).await;
    let admin = admin(&broker);
    admin
        .create_topics(vec![NewTopic::new("gt", 2, 1)], false)
        .await
        .unwrap();
    produce(&broker, "gt", 0, 5).await;

    // A live member.
    let mut consumer = Consumer::new(&config(
        &broker,
        &[
            ("group.id", "g1"),
            ("client.id", "member-client"),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("heartbeat.interval.ms", "100"),
            ("session.timeout.ms", "6000"),
        ],
    ))
    .unwrap();
    consumer.subscribe(vec!["gt"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumer.assignment().len() < 2 {
        assert!(Instant::now() < deadline, "never assigned");
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    consumer
        .commit_sync(&[("gt".to_string(), 0, 3)])
        .await
        .unwrap();

    let groups = admin.list_groups().await.unwrap();
    let g1 = groups.iter().find(|g| g.group_id == "g1").unwrap();
    assert_eq!(g1.protocol_type, "consumer");
    assert_eq!(g1.state, "Stable");

    let d = admin
        .describe_groups(vec!["g1".into(), "missing".into()])
        .await
        .unwrap();
    let g = d[0].1.as_ref().unwrap();
    assert_eq!(g.group_id, "g1");
    assert_eq!(g.state, "Stable");
    assert_eq!(g.protocol_type, "consumer");
    assert_eq!(g.protocol, "range");
    assert_eq!(g.members.len(), 1);
    let m = &g.members[0];
    assert_eq!(m.client_id, "member-client");
    assert!(!m.member_id.is_empty());
    assert_eq!(m.group_instance_id, None);
    assert_eq!(
        m.assignment,
        vec![("gt".to_string(), 0), ("gt".to_string(), 1)]
    );
    assert_eq!(err_name(&d[1].1), "GROUP_ID_NOT_FOUND");

    // A group with members can be neither deleted nor have its offsets altered.
    let r = admin.delete_groups(vec!["g1".into()]).await.unwrap();
    assert_eq!(err_name(&r[0].1), "NON_EMPTY_GROUP");
    let r = admin
        .alter_consumer_group_offsets("g1", vec![("gt".into(), 0, 1)])
        .await
        .unwrap();
    assert!(
        ["ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID"].contains(&err_name(&r[0].2)),
        "{r:?}"
    );

    assert_eq!(
        admin.list_consumer_group_offsets("g1").await.unwrap(),
        vec![("gt".to_string(), 0, 3, Some(String::new()))]
    );

    // The offsets topic is internal.
    let all = admin.list_topics(true).await.unwrap();
    assert!(all.contains(&"__consumer_offsets".to_string()), "{all:?}");
    assert!(!admin
        .list_topics(false)
        .await
        .unwrap()
        .contains(&"__consumer_offsets".to_string()));
    let d = admin
        .describe_topics(vec!["__consumer_offsets".into()])
        .await
        .unwrap();
    assert!(d[0].1.as_ref().unwrap().internal);

    consumer.close().await.unwrap();
    // Now empty: offsets can be altered.
    let r = admin
        .alter_consumer_group_offsets("g1", vec![("gt".into(), 0, 1), ("gt".into(), 1, 2)])
        .await
        .unwrap();
    assert!(r.iter().all(|(_, _, res)| res.is_ok()), "{r:?}");
    let offsets = admin.list_consumer_group_offsets("g1").await.unwrap();
    let plain: Vec<(String, i32, i64)> =
        offsets.into_iter().map(|(t, p, o, _)| (t, p, o)).collect();
    assert_eq!(
        plain,
        vec![("gt".to_string(), 0, 1), ("gt".to_string(), 1, 2)]
    );
    let d = admin.describe_groups(vec!["g1".into()]).await.unwrap();
    assert_eq!(d[0].1.as_ref().unwrap().state, "Empty");
    assert!(d[0].1.as_ref().unwrap().members.is_empty());

    // OffsetDelete
    let r = admin
        .delete_consumer_group_offsets("g1", vec![("gt".into(), 1)])
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].2.is_ok(), "{r:?}");
    let offsets = admin.list_consumer_group_offsets("g1").await.unwrap();
    assert_eq!(offsets.len(), 1);
    assert_eq!((offsets[0].1, offsets[0].2), (0, 1));
    let e = admin
        .delete_consumer_group_offsets("missing", vec![("gt".into(), 0)])
        .await
        .unwrap_err();
    assert_eq!(
        e.response_error(),
        Some(kafka_protocol::error::ResponseError::GroupIdNotFound),
        "{e}"
    );

    // delete_groups: now empty → deleted; unknown → GROUP_ID_NOT_FOUND.
    let r = admin
        .delete_groups(vec!["g1".into(), "missing".into()])
        .await
        .unwrap();
    assert!(r[0].1.is_ok(), "{r:?}");
    assert_eq!(err_name(&r[1].1), "GROUP_ID_NOT_FOUND");
    let d = admin.describe_groups(vec!["g1".into()]).await.unwrap();
    assert_eq!(err_name(&d[0].1), "GROUP_ID_NOT_FOUND");
    assert!(admin
        .list_groups()
        .await
        .unwrap()
        .iter()
        .all(|g| g.group_id != "g1"));

    broker.shutdown().await.unwrap();
}
