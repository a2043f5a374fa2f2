//! The admin client's transaction views (ListTransactions, DescribeTransactions,
//! DescribeProducers) against a real in-process Gregor broker and a real transactional
//! Gregor producer: while the transaction is open, after it committed, and for unknown ids
//! and partitions.

mod common;

use common::{config, start_broker};

use std::time::Duration;

use gregor_broker::BrokerHandle;
use gregor_client::{
    AdminClient, ItemResult, ListTransactionsFilter, NewTopic, Producer, ProducerRecord,
    TransactionListing,
};

const TIMEOUT: Duration = Duration::from_secs(20);

fn admin(broker: &BrokerHandle) -> AdminClient {
    AdminClient::new(&config(broker, &[("default.api.timeout.ms", "20000")])).unwrap()
}

fn err_name<T: std::fmt::Debug>(r: &ItemResult<T>) -> &str {
    match r {
        Err(e) => &e.name,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn ids(listed: &[TransactionListing]) -> Vec<(&str, &str)> {
    listed
        .iter()
        .map(|t| (t.transactional_id.as_str(), t.state.as_str()))
        .collect()
}

async fn list(admin: &AdminClient, filter: ListTransactionsFilter) -> Vec<TransactionListing> {
    let listed = admin.list_transactions(filter).await.unwrap();
    assert!(listed.unknown_state_filters.is_empty(), "{listed:?}");
    listed.transactions
}

fn states(s: &[&str]) -> ListTransactionsFilter {
    ListTransactionsFilter {
        states: s.iter().map(|x| x.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_views_while_open_after_commit_and_for_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let admin = admin(&broker);
    let created = admin
        .create_topics(vec![NewTopic::new("views", 2, 1)], false)
        .await
        .unwrap();
    assert!(created[0].1.is_ok(), "{created:?}");

    // Three plain (idempotent) records first, so the transaction starts at offset 3.
    let plain = Producer::new(&config(&broker, &[])).unwrap();
    for v in ["a", "b", "c"] {
        plain
            .send_and_wait(ProducerRecord::new("views", v.to_string()).with_partition(0))
            .await
            .unwrap();
    }
    let plain_id = plain.identity().unwrap().producer_id;

    let p = Producer::new(&config(
        &broker,
        &[
            ("transactional.id", "views-tx"),
            ("transaction.timeout.ms", "45000"),
        ],
    ))
    .unwrap();
    p.init_transactions(TIMEOUT).await.unwrap();
    p.begin_transaction().unwrap();
    for v in ["x", "y"] {
        p.send(ProducerRecord::new("views", v.to_string()).with_partition(0))
            .await
            .unwrap();
    }
    p.flush(TIMEOUT).await.unwrap();
    let open = p.identity().unwrap();

    // ListTransactions: every filter.
    let all = list(&admin, ListTransactionsFilter::default()).await;
    assert_eq!(ids(&all), vec![("views-tx", "Ongoing")]);
    assert_eq!(all[0].producer_id, open.producer_id);
    assert_eq!(
        ids(&list(&admin, states(&["Ongoing", "PrepareCommit"])).await),
        vec![("views-tx", "Ongoing")]
    );
    assert!(list(&admin, states(&["CompleteCommit"])).await.is_empty());
    let by_pid = |pid: i64| ListTransactionsFilter {
        producer_ids: vec![pid],
        ..Default::default()
    };
    assert_eq!(list(&admin, by_pid(open.producer_id)).await.len(), 1);
    assert!(list(&admin, by_pid(open.producer_id + 1000))
        .await
        .is_empty());
    let longer_than = |ms: i64| ListTransactionsFilter {
        min_duration_ms: Some(ms),
        ..Default::default()
    };
    assert_eq!(list(&admin, longer_than(0)).await.len(), 1);
    assert!(list(&admin, longer_than(3_600_000)).await.is_empty());
    let unknown = admin
        .list_transactions(states(&["Ongoing", "Nonsense"]))
        .await
        .unwrap();
    assert_eq!(unknown.unknown_state_filters, vec!["Nonsense".to_string()]);
    assert_eq!(unknown.transactions.len(), 1);

    // DescribeTransactions: the open transaction, and an unknown id as a per-id error.
    let described = admin
        .describe_transactions(vec!["views-tx".into(), "no-such-tx".into()])
        .await
        .unwrap();
    assert_eq!(described.len(), 2);
    assert_eq!(described[0].0, "views-tx");
    let d = described[0].1.as_ref().unwrap();
    assert_eq!(d.transactional_id, "views-tx");
    assert_eq!(d.state, "Ongoing");
    assert_eq!(
        (d.producer_id, d.producer_epoch),
        (open.producer_id, open.epoch)
    );
    assert_eq!(d.timeout_ms, 45_000);
    let start = d
        .start_time_ms
        .expect("an open transaction has a start time");
    assert!(start > 1_600_000_000_000, "{start}");
    assert_eq!(d.partitions, vec![("views".to_string(), 0)]);
    assert_eq!(described[1].0, "no-such-tx");
    assert_eq!(err_name(&described[1].1), "TRANSACTIONAL_ID_NOT_FOUND");
    assert!(
        described[1]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("no-such-tx"),
        "{:?}",
        described[1].1
    );

    // DescribeProducers: the open transaction starts at offset 3; the plain producer has
    // none; an empty partition has no producers; an unknown partition is a per-item error.
    let producers = admin
        .describe_producers(vec![
            ("views".into(), 0),
            ("views".into(), 1),
            ("views".into(), 9),
        ])
        .await
        .unwrap();
    assert_eq!(
        producers
            .iter()
            .map(|(t, p, _)| (t.as_str(), *p))
            .collect::<Vec<_>>(),
        vec![("views", 0), ("views", 1), ("views", 9)]
    );
    let on0 = producers[0].2.as_ref().unwrap();
    assert_eq!(on0.len(), 2, "{on0:?}");
    let txn = on0
        .iter()
        .find(|s| s.producer_id == open.producer_id)
        .unwrap();
    assert_eq!(txn.producer_epoch, i32::from(open.epoch));
    assert_eq!(txn.last_sequence, 1);
    assert_eq!(txn.current_txn_start_offset, Some(3));
    assert!(txn.last_timestamp >= start - 60_000, "{txn:?}");
    let idem = on0.iter().find(|s| s.producer_id == plain_id).unwrap();
    assert_eq!(idem.last_sequence, 2);
    assert_eq!(idem.current_txn_start_offset, None);
    assert_eq!(producers[1].2, Ok(Vec::new()));
    assert_eq!(err_name(&producers[2].2), "UNKNOWN_TOPIC_OR_PARTITION");

    // After commit: no longer ongoing, no open transaction on
    // the partition; the coordinator's new epoch is what DescribeTransactions reports.
    p.commit_transaction(TIMEOUT).await.unwrap();
    let committed = p.identity().unwrap();
    assert!(list(&admin, states(&["Ongoing"])).await.is_empty());
    assert_eq!(
        ids(&list(&admin, states(&["CompleteCommit"])).await),
        vec![("views-tx", "CompleteCommit")]
    );
    assert!(list(&admin, longer_than(0)).await.is_empty());
    let described = admin
        .describe_transactions(vec!["views-tx".into()])
        .await
        .unwrap();
    let d = described[0].1.as_ref().unwrap();
    assert_eq!(d.state, "CompleteCommit");
    assert_eq!(
        (d.producer_id, d.producer_epoch),
        (committed.producer_id, committed.epoch)
    );
    // Like Kafka's coordinator, the completed transaction keeps its start time and no
    // longer lists partitions.
    assert!(d.start_time_ms.is_some_and(|ms| ms >= start), "{d:?}");
    assert!(d.partitions.is_empty(), "{d:?}");
    let producers = admin
        .describe_producers(vec![("views".into(), 0)])
        .await
        .unwrap();
    let txn = producers[0]
        .2
        .as_ref()
        .unwrap()
        .iter()
        .find(|s| s.producer_id == open.producer_id)
        .cloned()
        .unwrap();
    assert_eq!(txn.current_txn_start_offset, None, "{txn:?}");

    // A topic that does not exist: per-item error too.
    let missing = admin
        .describe_producers(vec![("missing".into(), 0)])
        .await
        .unwrap();
    assert_eq!(err_name(&missing[0].2), "UNKNOWN_TOPIC_OR_PARTITION");

    p.close(TIMEOUT).await.unwrap();
    plain.close(TIMEOUT).await.unwrap();
    broker.shutdown().await.unwrap();
}
