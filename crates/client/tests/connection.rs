//! Connection tests against a real in-process broker.

use std::time::Duration;

use gregor_broker::BrokerConfig;
use gregor_client::connection::Connection;
use gregor_client::Error;
use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestKind, ResponseKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_highest_common_versions_and_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let broker = gregor_broker::start(
        BrokerConfig::from_pairs(vec![
            (
                "listeners".to_string(),
                "PLAINTEXT://127.0.0.1:0".to_string(),
            ),
            ("log.dirs".to_string(), dir.path().display().to_string()),
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    let conn = Connection::connect(&broker.local_addr.to_string(), "t", Duration::from_secs(5))
        .await
        .unwrap();
    // Broker: Produce 3-11, Metadata 0-12, Fetch 4-12, InitProducerId 0-4.
    assert_eq!(conn.version(ApiKey::Produce), Some(11));
    assert_eq!(conn.version(ApiKey::Metadata), Some(12));
    assert_eq!(conn.version(ApiKey::Fetch), Some(12));
    assert_eq!(conn.version(ApiKey::InitProducerId), Some(4));
    // Not in the client's table: no version, and a clear error naming the API.
    assert_eq!(conn.version(ApiKey::DescribeAcls), None);
    let e = conn.require_version(ApiKey::DescribeAcls).unwrap_err();
    assert!(matches!(e, Error::UnsupportedApi { .. }) && e.to_string().contains("DescribeAcls"));

    // Ten requests queued before any response is awaited, answered in order.
    let request = RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![])));
    let futures: Vec<_> = (0..10)
        .map(|_| conn.send(ApiKey::Metadata, &request).unwrap())
        .collect();
    for f in futures {
        assert!(matches!(f.await.unwrap(), ResponseKind::Metadata(_)));
    }
    assert!(!conn.is_closed());
    broker.shutdown().await.unwrap();
    // The broker is gone: requests fail with a network error instead of hanging.
    let e = match conn.send(ApiKey::Metadata, &request) {
        Ok(f) => f.await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        matches!(e, Error::Network { .. } | Error::RequestTimeout { .. }),
        "{e}"
    );
}
