//! The transaction APIs on the wire: AddPartitionsToTxn (client form and the batched
//! verify-only form), AddOffsetsToTxn, TxnOffsetCommit, EndTxn, and the admin views
//! ListTransactions, DescribeTransactions and DescribeProducers. The rules live in
//! `crate::txn`; this module only translates requests and answers.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use super::groups::commit_entry;
use super::txn_verification::verify_with;
use super::wire::{s, NONE};
use crate::blocking::block_in_place_or_run;
use crate::broker::{Broker, TxnCoordinatorAt};
use crate::coordinator_services::CoordinatorServices;
use crate::group::coordinator::{TxnOffsetWrite, OFFSETS_TOPIC};
use crate::txn::state::{code, code_for_version, TxnError, TxnStatus};

fn log_refusal(api: &str, id: &str, e: &TxnError) {
    tracing::debug!(api, transactional_id = id, code = e.0, reason = %e.1, "transaction request refused");
}

/// The (topic, partition) pairs in `partitions` the metadata does not know.
fn unknown_partitions(broker: &Broker, partitions: &[(String, i32)]) -> Vec<(String, i32)> {
    let image = broker.image();
    partitions
        .iter()
        .filter(|(t, p)| {
            !image
                .topic(t)
                .is_some_and(|topic| topic.partitions.contains_key(p))
        })
        .cloned()
        .collect()
}

fn topic_results(
    topics: &[AddPartitionsToTxnTopic],
    code_of: impl Fn(&str, i32) -> i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(code_of(t.name.0.as_str(), *p))
                        })
                        .collect(),
                )
        })
        .collect()
}

/// Adds (or, `verify_only`, checks) the partitions of one transaction; one code per
/// partition.
fn add_or_verify(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    // Clients never write internal topics; offsets join a transaction through
    // AddOffsetsToTxn. (A group coordinator on another broker verifies its offsets
    // partition before a TxnOffsetCommit: verify-only may name it.)
    if let Some(internal) = topics
        .iter()
        .find(|t| !verify_only && crate::internal_topic::is_internal(t.name.0.as_str()))
    {
        tracing::debug!(topic = %internal.name.0.as_str(), "AddPartitionsToTxn for an internal topic refused");
        return topic_results(topics, |t, _| {
            if t == internal.name.0.as_str() {
                code::INVALID_TOPIC_EXCEPTION
            } else {
                code::OPERATION_NOT_ATTEMPTED
            }
        });
    }
    let all: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
        .collect();
    // Unknown partitions get UNKNOWN_TOPIC_OR_PARTITION, the others OPERATION_NOT_ATTEMPTED.
    let unknown = unknown_partitions(broker, &all);
    if !unknown.is_empty() {
        return topic_results(topics, |t, p| {
            if unknown.iter().any(|(ut, up)| ut == t && *up == p) {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                code::OPERATION_NOT_ATTEMPTED
            }
        });
    }
    if verify_only {
        return topic_results(topics, |t, p| {
            match broker
                .txns
                .verify(transactional_id, producer_id, epoch, &(t.to_string(), p))
            {
                Ok(()) => NONE,
                Err(e) => code_for_version(e.0, version, 2),
            }
        });
    }
    let result = broker
        .txns
        .add_partitions(broker, transactional_id, producer_id, epoch, &all);
    let c = match result {
        Ok(()) => NONE,
        Err(e) => {
            log_refusal("AddPartitionsToTxn", transactional_id, &e);
            code_for_version(e.0, version, 2)
        }
    };
    topic_results(topics, |_, _| c)
}

pub fn add_partitions(
    broker: &Broker,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version <= 3 {
        let results = add_or_verify(
            broker,
            request.v3_and_below_transactional_id.0.as_str(),
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            false,
            &request.v3_and_below_topics,
            version,
        );
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let results = request
        .transactions
        .iter()
        .map(|t| {
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(add_or_verify(
                    broker,
                    t.transactional_id.0.as_str(),
                    t.producer_id.0,
                    t.producer_epoch,
                    t.verify_only,
                    &t.topics,
                    version,
                ))
        })
        .collect();
    AddPartitionsToTxnResponse::default()
        .with_error_code(NONE)
        .with_results_by_transaction(results)
}

pub fn add_offsets(
    broker: &Broker,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let id = request.transactional_id.0.as_str();
    let group = request.group_id.0.as_str();
    let result = if group.is_empty() {
        Err(TxnError(
            code::INVALID_REQUEST,
            "the group id is empty".into(),
        ))
    } else {
        broker
            .ensure_offsets_topic()
            .map_err(|e| TxnError(code::COORDINATOR_NOT_AVAILABLE, e.to_string()))
            .and_then(|()| {
                let partition = (
                    OFFSETS_TOPIC.to_string(),
                    broker.groups.partition_for(group),
                );
                broker.txns.add_partitions(
                    broker,
                    id,
                    request.producer_id.0,
                    request.producer_epoch,
                    &[partition],
                )
            })
    };
    let c = match result {
        Ok(()) => NONE,
        Err(e) => {
            log_refusal("AddOffsetsToTxn", id, &e);
            code_for_version(e.0, version, 2)
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(c)
}

pub async fn txn_offset_commit(
    broker: &Broker,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let id = request.transactional_id.0.as_str();
    let group = request.group_id.0.as_str();
    let offsets_partition = (
        OFFSETS_TOPIC.to_string(),
        broker.groups.partition_for(group),
    );
    let entries: Vec<_> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                commit_entry(
                    &t.name,
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref(),
                )
            })
        })
        .collect();
    // The group's offsets partition must be in the ongoing transaction (AddOffsetsToTxn
    // first): checked and written under the coordinator lock, as for produce.
    // A coordinator on another broker is asked first (KIP-890 verification); the offsets
    // are then written as the producer's transactional batch.
    let producer = (request.producer_id.0, request.producer_epoch);
    let commit = |verified: Option<u64>| {
        broker.groups.commit(
            broker,
            group,
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
            request.generation_id,
            entries.clone(),
            Some(TxnOffsetWrite {
                producer_id: producer.0,
                epoch: producer.1,
                verified,
            }),
        )
    };
    let codes = match broker.txn_coordinator_at(id) {
        TxnCoordinatorAt::Here => block_in_place_or_run(|| {
            broker
                .txns
                .append_in_txn(broker, id, producer, &offsets_partition, false, || {
                    commit(None)
                })
        }),
        TxnCoordinatorAt::There(coordinator) => {
            // Guarded as a verified produce is: a marker between the verification and the
            // write (the transaction ended meanwhile) makes the write INVALID_TXN_STATE.
            let token = broker
                .partition(&offsets_partition.0, offsets_partition.1)
                .map(|p| p.begin_txn_verification(producer.0));
            block_in_place_or_run(|| {
                verify_with(
                    &broker.inter_broker,
                    &coordinator,
                    id,
                    producer,
                    &offsets_partition,
                    false,
                )
            })
            .map(|()| commit(token))
            .map_err(|(c, m)| TxnError(c, m))
        }
        TxnCoordinatorAt::Unavailable => Err(TxnError(
            code::COORDINATOR_NOT_AVAILABLE,
            "the transaction coordinator is not available".into(),
        )),
    };
    let codes = match codes {
        Ok(outcome) => broker.groups.finish_commit(outcome).await,
        Err(e) => {
            log_refusal("TxnOffsetCommit", id, &e);
            vec![code_for_version(e.0, version, 3); entries.len()]
        }
    };
    let mut codes = codes.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().expect("one code per partition"))
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub fn end_txn(broker: &Broker, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let id = request.transactional_id.0.as_str();
    // EndTxn v5 (KIP-890): every transaction ends with a new epoch, returned to the client.
    let bump = version >= 5;
    let result = broker.txns.end_txn(
        broker,
        id,
        request.producer_id.0,
        request.producer_epoch,
        request.committed,
        bump,
    );
    let (error, producer_id, epoch) = match result {
        Ok((producer_id, epoch)) => (NONE, producer_id, epoch),
        Err(e) => {
            log_refusal("EndTxn", id, &e);
            (code_for_version(e.0, version, 2), -1, -1)
        }
    };
    let response = EndTxnResponse::default().with_error_code(error);
    // The producer id and epoch exist in the response from v5 on.
    if bump {
        response
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
    } else {
        response
    }
}

pub fn list_transactions(
    broker: &Broker,
    request: ListTransactionsRequest,
    version: i16,
) -> ListTransactionsResponse {
    let unknown_filters: Vec<_> = request
        .state_filters
        .iter()
        .filter(|f| !TxnStatus::ALL.iter().any(|k| k.name() == f.as_str()))
        .cloned()
        .collect();
    let now = broker.clock.now_ms();
    // v1 adds the duration filter: transactions running longer than that many ms.
    let min_duration = if version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let mut states: Vec<ListedTransaction> = broker
        .txns
        .all()
        .into_iter()
        .filter(|m| {
            request.state_filters.is_empty()
                || request
                    .state_filters
                    .iter()
                    .any(|f| f.as_str() == m.status.name())
        })
        .filter(|m| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == m.producer_id)
        })
        .filter(|m| {
            min_duration < 0 || (m.status == TxnStatus::Ongoing && now - m.start_ms >= min_duration)
        })
        .map(|m| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(s(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(s(m.status.name()))
        })
        .collect();
    states.sort_by(|a, b| a.transactional_id.0.cmp(&b.transactional_id.0));
    ListTransactionsResponse::default()
        .with_error_code(NONE)
        .with_unknown_state_filters(unknown_filters)
        .with_transaction_states(states)
}

pub fn describe_transactions(
    broker: &Broker,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let base = TransactionState::default().with_transactional_id(id.clone());
            let described = broker.txns.describe(id.0.as_str());
            let Ok(Some(m)) = described else {
                let error = described
                    .err()
                    .map_or(code::TRANSACTIONAL_ID_NOT_FOUND, |e| e.0);
                return base
                    .with_error_code(error)
                    .with_transaction_state(s(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1);
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for (t, p) in &m.partitions {
                match topics.last_mut() {
                    Some(d) if d.topic.0.as_str() == t => d.partitions.push(*p),
                    _ => topics.push(
                        TopicData::default()
                            .with_topic(TopicName(s(t.clone())))
                            .with_partitions(vec![*p]),
                    ),
                }
            }
            base.with_error_code(NONE)
                .with_transaction_state(s(m.status.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub fn describe_producers(
    broker: &Broker,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|p| {
                    let base = PartitionResponse::default().with_partition_index(*p);
                    let Some(partition) = broker.replicas.get(t.name.0.as_str(), *p) else {
                        return base
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(s(format!(
                                "{}-{p} is not hosted here",
                                t.name.0.as_str()
                            ))));
                    };
                    let producers = partition
                        .producer_summaries()
                        .into_iter()
                        .map(|ps| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(ps.producer_id))
                                .with_producer_epoch(ps.producer_epoch.into())
                                .with_last_sequence(ps.last_sequence)
                                .with_last_timestamp(ps.last_timestamp)
                                .with_coordinator_epoch(ps.coordinator_epoch)
                                .with_current_txn_start_offset(ps.current_txn_start_offset)
                        })
                        .collect();
                    base.with_error_code(NONE).with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
