//! A minimal fetch helper (the consumer proper comes later).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::metadata::Cluster;

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Producer id stamped on the record's batch (-1 when not idempotent).
    pub producer_id: i64,
}

/// Fetches once from `topic`/`partition` starting at `offset` (read-uncommitted), waiting at
/// most `max_wait` for data. Uses `bootstrap.servers` (and optionally `client.id`,
/// `request.timeout.ms`) from `config`.
pub async fn fetch_once(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait: Duration,
) -> Result<Vec<ConsumerRecord>> {
    let timeout = config.int("request.timeout.ms", 30_000, 1, i32::MAX as i64)? as u64;
    let cluster = Cluster::new(
        config.bootstrap_servers()?,
        config.get("client.id").unwrap_or("gregor-fetch"),
        Duration::from_millis(timeout) + max_wait,
    );
    cluster.refresh(&[topic.to_string()]).await?;
    let leader = cluster
        .with_cache(|c| c.leader(topic, partition))
        .ok_or_else(|| Error::NoBrokerAvailable(format!("no leader for {topic}-{partition}")))?;
    let conn = cluster.node_connection(leader).await?;
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(1)
        .with_max_bytes(64 * 1024 * 1024)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(32 * 1024 * 1024)])]);
    let ResponseKind::Fetch(response) = conn
        .send(ApiKey::Fetch, &RequestKind::Fetch(request))?
        .await?
    else {
        return Err(Error::Protocol("unexpected response to Fetch".into()));
    };
    if let Some(e) = Error::broker(response.error_code, Some("Fetch".into())) {
        return Err(e);
    }
    let mut out = Vec::new();
    for t in &response.responses {
        for p in t
            .partitions
            .iter()
            .filter(|p| p.partition_index == partition)
        {
            if let Some(e) = Error::broker(p.error_code, Some(format!("Fetch {topic}-{partition}")))
            {
                return Err(e);
            }
            let Some(records) = p.records.clone() else {
                continue;
            };
            let mut buf = records;
            let sets = RecordBatchDecoder::decode_all(&mut buf)
                .map_err(|e| Error::Protocol(format!("cannot decode fetched batches: {e}")))?;
            for set in sets {
                for r in set.records {
                    if r.control || r.offset < offset {
                        continue;
                    }
                    out.push(ConsumerRecord {
                        topic: topic.to_string(),
                        partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r.key,
                        value: r.value,
                        headers: r
                            .headers
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                        producer_id: r.producer_id,
                    });
                }
            }
        }
    }
    Ok(out)
}
