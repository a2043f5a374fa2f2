//! KIP-890 verification of a transactional write whose transaction coordinator is another
//! broker: before the first write of a transaction to a partition led here, this broker
//! asks the coordinator (AddPartitionsToTxn v5, one transaction, this partition) whether the
//! producer's ongoing transaction holds the partition, or, for Produce v12+ (KIP-890 part
//! 2, where clients no longer add partitions themselves), to add it. A guard token taken
//! before asking makes a marker that ends the transaction meanwhile refuse the write
//! (`Partition::append_verified`), so a late write never opens a transaction nobody ends.
//!
//! A coordinator that cannot answer now (moving, loading, busy, unreachable) is reported to
//! the producer as NOT_ENOUGH_REPLICAS, retriable for every client version, as Kafka does.

use std::time::Duration;

use gregor_metadata::image::BrokerImage;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};

use super::wire::s;
use crate::txn::state::code;

/// The AddPartitionsToTxn version brokers send each other (batched, with verify-only).
const VERSION: i16 = 5;
/// How long the coordinator may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Kafka's retriable stand-in for a coordinator that could not verify now.
pub const NOT_ENOUGH_REPLICAS: i16 = 19;

/// Asks `coordinator` whether `producer` (id, epoch) of `transactional_id` may write to
/// `partition` (adding it to the transaction when `add`); `Err((code, message))` if not.
pub fn verify_with(
    inter_broker: &crate::inter_broker::InterBrokerClient,
    coordinator: &BrokerImage,
    transactional_id: &str,
    producer: (i64, i16),
    partition: &(String, i32),
    add: bool,
) -> Result<(), (i16, String)> {
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(s(transactional_id)))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_verify_only(!add)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(partition.0.as_str())))
                .with_partitions(vec![partition.1])]),
    ]);
    let unavailable = |why: String| {
        Err((
            NOT_ENOUGH_REPLICAS,
            format!("the transaction coordinator could not verify the write: {why}"),
        ))
    };
    let response: AddPartitionsToTxnResponse = match inter_broker.call(
        (coordinator.host.as_str(), coordinator.port),
        ApiKey::AddPartitionsToTxn,
        VERSION,
        &request,
        TIMEOUT,
    ) {
        Ok(r) => r,
        Err(e) => return unavailable(format!("broker {}: {e}", coordinator.node_id)),
    };
    let error = if response.error_code != code::NONE {
        response.error_code
    } else {
        response
            .results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .flat_map(|t| &t.results_by_partition)
            .find(|p| p.partition_index == partition.1)
            .map_or(code::INVALID_REQUEST, |p| p.partition_error_code)
    };
    match error {
        code::NONE => Ok(()),
        code::NOT_COORDINATOR
        | code::COORDINATOR_NOT_AVAILABLE
        | code::CONCURRENT_TRANSACTIONS
        | COORDINATOR_LOAD_IN_PROGRESS => unavailable(format!("error code {error}")),
        code::PRODUCER_FENCED => Err((
            code::INVALID_PRODUCER_EPOCH,
            "the producer's epoch is fenced".into(),
        )),
        c => Err((
            c,
            format!("the transaction coordinator refused the write ({c})"),
        )),
    }
}

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
