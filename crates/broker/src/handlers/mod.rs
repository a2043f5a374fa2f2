//! Request handlers, one module per API family. Each takes the decoded request and returns
//! the response body; `None` means the request wants no response (acks=0 produce).

pub mod api_versions;
pub mod cluster;
pub mod configs;
pub mod delete_records;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod producer_id;
pub mod reassignments;
pub mod topics;
pub mod transactions;
pub mod txn_verification;
pub mod wire;
pub mod write_txn_markers;

use gregor_storage::FileRecords;
use kafka_protocol::messages::{RequestHeader, RequestKind, ResponseKind};

use crate::blocking::block_in_place_or_run;
use crate::broker::Broker;

/// A handler's answer: the response, and for a Fetch the file slices its placeholder
/// records stand for (see [`fetch`]), in encoding order.
pub struct Reply {
    pub response: ResponseKind,
    pub files: Vec<FileRecords>,
}

/// Routes a decoded request to its handler. `Ok(None)`: no response is due (acks=0).
pub async fn handle(
    broker: &Broker,
    header: &RequestHeader,
    request: RequestKind,
) -> Result<Option<Reply>, String> {
    let v = header.request_api_version;
    let mut files = Vec::new();
    let response = match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(&r, v)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(broker, r, v)),
        RequestKind::Produce(r) => match produce::handle(broker, r, v).await {
            Some(response) => ResponseKind::Produce(response),
            None => return Ok(None),
        },
        RequestKind::Fetch(r) => {
            let (response, slices) = fetch::handle(broker, r, v).await;
            files = slices;
            ResponseKind::Fetch(response)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, r, v))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, r))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(topics::create_topics(broker, r, v))
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(topics::delete_topics(broker, r, v))
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(topics::create_partitions(broker, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe(broker, r, v))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(configs::alter(broker, r)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(broker, r))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(cluster::describe(broker, r))
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(cluster::describe_quorum(broker, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(broker, r, v))
        }
        RequestKind::JoinGroup(r) => {
            let client_id = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or("");
            ResponseKind::JoinGroup(groups::join_group(broker, r, v, client_id).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(broker, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(broker, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave_group(broker, r, v)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(groups::offset_commit(broker, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(groups::offset_fetch(broker, r, v))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(broker, r, v)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(broker, r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(broker, r))
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(broker, r))
        }
        RequestKind::InitProducerId(r) => {
            // May abort a previous producer's transaction: marker writes to disk.
            ResponseKind::InitProducerId(block_in_place_or_run(|| {
                producer_id::init_producer_id(broker, r, v)
            }))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            // The transaction coordinator's lock may be held while a state change replicates:
            // waiting for it must not take a runtime worker away from the fetches that
            // replicate it.
            ResponseKind::AddPartitionsToTxn(block_in_place_or_run(|| {
                transactions::add_partitions(broker, r, v)
            }))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(block_in_place_or_run(|| {
                transactions::add_offsets(broker, r, v)
            }))
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(broker, r, v).await)
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(write_txn_markers::write_txn_markers(broker, r).await)
        }
        RequestKind::EndTxn(r) => {
            // Writes a marker to every partition of the transaction before answering.
            ResponseKind::EndTxn(block_in_place_or_run(|| {
                transactions::end_txn(broker, r, v)
            }))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(block_in_place_or_run(|| {
                transactions::list_transactions(broker, r, v)
            }))
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(block_in_place_or_run(|| {
                transactions::describe_transactions(broker, r)
            }))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(transactions::describe_producers(broker, r))
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, r))
        }
        // The guard lets through only APIs in the version table, and each has an arm above;
        // should one be missing, the connection is closed rather than the broker panicking.
        RequestKind::AlterPartitionReassignments(r) => {
            ResponseKind::AlterPartitionReassignments(reassignments::alter(broker, r))
        }
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(reassignments::list(broker, r))
        }
        RequestKind::DescribeTopicPartitions(r) => {
            ResponseKind::DescribeTopicPartitions(describe_topic_partitions::handle(broker, r))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(broker, r, v))
        }
        other => return Err(format!("no handler for {:?}", other)),
    };
    Ok(Some(Reply { response, files }))
}
