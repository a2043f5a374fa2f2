//! Produce: append each partition's record set as leader, then answer per the acks rule.
//!
//! acks=0 gets no response; acks=1 is answered once the leader wrote the batch; acks=-1
//! waits (as a delayed operation woken by the partition's high-watermark notifications)
//! until every in-sync replica has it (the HW passed it), or the request timeout passes.
//! acks=-1 is refused with NOT_ENOUGH_REPLICAS while the ISR is smaller than
//! `min.insync.replicas`, and answered NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank
//! below it while the write waited; NOT_LEADER_OR_FOLLOWER when the lead moved meanwhile.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};

use super::txn_verification;
use super::wire::{code, current_leader, s, storage_error, NONE};
use crate::blocking::block_in_place_or_run;
use crate::broker::Broker;
use crate::broker::TxnCoordinatorAt;
use crate::partition::{AppendError, AppendOrigin, Partition, ReplicationWait};
use crate::txn::state::{code as txn_code, TxnError};
use gregor_storage::batch::BatchIter;
use gregor_storage::log::AppendInfo;
use kafka_protocol::messages::TransactionalId;

fn partition_error(
    index: i32,
    error: ResponseError,
    message: Option<String>,
) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code(error))
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(s))
}

/// A Produce whose records are written (or refused), with the partitions whose answer waits
/// for replication (acks=all).
pub struct Appended {
    acks: i16,
    responses: Vec<TopicProduceResponse>,
    /// (partition, the HW that covers the write, its min.insync.replicas).
    waits: Vec<(Arc<Partition>, i64, usize)>,
    deadline: tokio::time::Instant,
}

impl Appended {
    /// Whether the answer waits for followers (at most until the request's timeout).
    pub fn waits_for_replicas(&self) -> bool {
        !self.waits.is_empty()
    }
}

/// Serves a Produce: writes, then waits as the acks rule says.
pub async fn handle(
    broker: &Broker,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    complete(broker, append(broker, request, version)).await
}

/// The first half of a Produce: writes each partition's records as leader (nothing here
/// waits for another broker but a transaction's verification), so a connection may take its
/// next Produce while this one waits for replication.
pub fn append(broker: &Broker, request: ProduceRequest, version: i16) -> Appended {
    let acks = request.acks;
    let mut waits = Vec::new();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        // Looked up once per topic, not per partition: keyless records are refused here.
        let is_compacted = compacted(broker, &name);
        // The topic's own min.insync.replicas, else the broker's (only acks=-1 uses it).
        let min_isr: usize = if acks == -1 {
            broker
                .topic_config_value(&name, "min.insync.replicas")
                .parse()
                .unwrap_or(1)
        } else {
            1
        };
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for pdata in topic.partition_data {
            let index = pdata.index;
            if !matches!(acks, -1..=1) {
                partitions.push(partition_error(
                    index,
                    ResponseError::InvalidRequiredAcks,
                    Some(format!("acks must be -1, 0 or 1, got {acks}")),
                ));
                continue;
            }
            if crate::internal_topic::is_internal(&name) {
                partitions.push(partition_error(
                    index,
                    ResponseError::InvalidTopicException,
                    Some(format!("cannot append to internal topic {name}")),
                ));
                continue;
            }
            let Some(partition) = broker.replicas.get(&name, index) else {
                partitions.push(partition_error(
                    index,
                    broker.not_hosted_error(&name, index),
                    None,
                ));
                continue;
            };
            if acks == -1 && partition.isr_size() < min_isr {
                partitions.push(partition_error(
                    index,
                    ResponseError::NotEnoughReplicas,
                    Some(format!(
                        "{} in-sync replicas, min.insync.replicas is {min_isr}",
                        partition.isr_size()
                    )),
                ));
                continue;
            }
            let Some(records) = pdata.records.filter(|r| !r.is_empty()) else {
                partitions.push(partition_error(
                    index,
                    ResponseError::InvalidRecord,
                    Some("the produce request carries no records".into()),
                ));
                continue;
            };
            if is_compacted {
                match crate::record_scan::records_without_key(&records) {
                    Ok(missing) if missing.is_empty() => {}
                    Ok(missing) => {
                        let message =
                            format!("compacted topic {name} cannot accept a record without a key");
                        let record_errors = missing
                            .into_iter()
                            .map(|i| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(i)
                                    .with_batch_index_error_message(Some(s(message.clone())))
                            })
                            .collect();
                        partitions.push(
                            partition_error(index, ResponseError::InvalidRecord, Some(message))
                                .with_record_errors(record_errors),
                        );
                        continue;
                    }
                    Err(e) => {
                        partitions.push(partition_error(
                            index,
                            ResponseError::CorruptMessage,
                            Some(e),
                        ));
                        continue;
                    }
                }
            }
            match append_records(
                broker,
                &partition,
                request.transactional_id.as_ref(),
                &records,
                version,
            ) {
                Ok(info) => {
                    broker.metrics.produced(
                        &partition.topic,
                        (info.last_offset - info.first_offset + 1).max(0) as u64,
                        records.len() as u64,
                    );
                    if acks == -1 {
                        waits.push((partition.clone(), info.last_offset + 1, min_isr));
                    }
                    partitions.push(
                        PartitionProduceResponse::default()
                            .with_index(index)
                            .with_error_code(NONE)
                            .with_base_offset(info.first_offset)
                            .with_log_append_time_ms(info.log_append_time)
                            .with_log_start_offset(info.log_start_offset),
                    );
                }
                Err(AppendError::Duplicate {
                    first_offset,
                    last_offset,
                }) => {
                    // A retry of a batch already written: the original offset, nothing new.
                    // The original may not be replicated yet (its answer timed out, or this
                    // leader is new): acks=all waits for it as it would have, or a record on
                    // this leader alone would be acknowledged.
                    if acks == -1 {
                        waits.push((partition.clone(), last_offset + 1, min_isr));
                    }
                    partitions.push(
                        PartitionProduceResponse::default()
                            .with_index(index)
                            .with_error_code(NONE)
                            .with_base_offset(first_offset)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(partition.log_start_offset()),
                    );
                }
                Err(e) => {
                    let (c, message) = match &e {
                        AppendError::Storage(se) => storage_error(se),
                        AppendError::Producer(c, m) => (*c, m.clone()),
                        AppendError::NotLeader => {
                            (code(ResponseError::NotLeaderOrFollower), e.to_string())
                        }
                        AppendError::Duplicate { .. }
                        | AppendError::NotInOngoingTxn
                        | AppendError::NotFollower => {
                            unreachable!("handled above")
                        }
                    };
                    tracing::debug!(topic = %name, partition = index, error = %e, "produce refused");
                    partitions.push(
                        PartitionProduceResponse::default()
                            .with_index(index)
                            .with_error_code(c)
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1)
                            .with_error_message(Some(s(message))),
                    );
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(request.timeout_ms.max(0) as u64);
    Appended {
        acks,
        responses,
        waits,
        deadline,
    }
}

/// The second half of a Produce: waits until every acks=all write is replicated (or failed),
/// then answers; `None` for acks=0.
pub async fn complete(broker: &Broker, appended: Appended) -> Option<ProduceResponse> {
    let Appended {
        acks,
        mut responses,
        waits,
        deadline,
    } = appended;
    if acks == 0 {
        return None;
    }
    let _waiting = (!waits.is_empty()).then(|| broker.metrics.produce_waiting());
    for (partition, required_hw, min_isr) in waits {
        let failure = match partition.wait_replicated(required_hw, deadline).await {
            Err(ReplicationWait::TimedOut) => Some((
                ResponseError::RequestTimedOut,
                "the write was not replicated to all in-sync replicas in time".to_string(),
            )),
            Err(ReplicationWait::NotLeader) => Some((
                ResponseError::NotLeaderOrFollower,
                "leadership moved before the write was replicated".to_string(),
            )),
            Ok(()) if partition.isr_size() < min_isr => Some((
                ResponseError::NotEnoughReplicasAfterAppend,
                format!(
                    "written, but the ISR shrank to {} replicas, below min.insync.replicas {min_isr}",
                    partition.isr_size()
                ),
            )),
            Ok(()) => None,
        };
        if let Some((error, message)) = failure {
            mark_failed(
                &mut responses,
                &partition.topic,
                partition.index,
                error,
                message,
            );
        }
    }
    let node_endpoints = name_current_leaders(broker, &mut responses);
    Some(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints),
    )
}

/// KIP-951: a partition answered NOT_LEADER_OR_FOLLOWER names its current leader and epoch
/// (Produce v10+), and the response carries those leaders' endpoints, so the client goes
/// there without a metadata round trip.
fn name_current_leaders(
    broker: &Broker,
    responses: &mut [TopicProduceResponse],
) -> Vec<NodeEndpoint> {
    let image = broker.image();
    let mut leaders = std::collections::BTreeSet::new();
    for t in responses.iter_mut() {
        for p in &mut t.partition_responses {
            if p.error_code != code(ResponseError::NotLeaderOrFollower) {
                continue;
            }
            if let Some((leader, epoch)) = current_leader(&image, t.name.0.as_str(), p.index) {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
                leaders.insert(leader);
            }
        }
    }
    leaders
        .into_iter()
        .filter_map(|id| image.brokers.get(&id))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(s(b.host.clone()))
                .with_port(b.port as i32)
                .with_rack(b.rack.clone().map(s))
        })
        .collect()
}

fn mark_failed(
    responses: &mut [TopicProduceResponse],
    topic: &str,
    index: i32,
    error: ResponseError,
    message: String,
) {
    for t in responses.iter_mut().filter(|t| t.name.0.as_str() == topic) {
        for p in t
            .partition_responses
            .iter_mut()
            .filter(|p| p.index == index)
        {
            p.error_code = code(error);
            p.error_message = Some(s(message.clone()));
        }
    }
}

/// Appends a client's record set (the partition refuses control batches). A transactional
/// batch is written only if the transaction coordinator has the partition in
/// the producer's ongoing transaction (KIP-890 verification, checked and written under the
/// coordinator lock so no EndTxn can come between).
fn append_records(
    broker: &Broker,
    partition: &Partition,
    transactional_id: Option<&TransactionalId>,
    records: &[u8],
    version: i16,
) -> Result<AppendInfo, AppendError> {
    let refused = |c: i16, m: String| Err(AppendError::Producer(c, m));
    let Some((first, _)) = BatchIter::new(records).next() else {
        return partition.append(records, AppendOrigin::Client, broker.clock.now_ms());
    };
    if !first.is_transactional() {
        return partition.append(records, AppendOrigin::Client, broker.clock.now_ms());
    }
    let Some(id) = transactional_id.filter(|t| !t.0.is_empty()) else {
        return refused(
            code(ResponseError::InvalidTxnState),
            "a transactional batch needs the producer's transactional id".into(),
        );
    };
    let producer = (first.producer_id, first.producer_epoch);
    // Fast path: the transaction is already open here at this epoch (an earlier write was
    // verified and no marker ended it since), so the coordinator need not be asked.
    match partition.append_to_ongoing_txn(records, broker.clock.now_ms(), producer) {
        Err(AppendError::NotInOngoingTxn) => {}
        done => return done,
    }
    let target = (partition.topic.clone(), partition.index);
    // Produce v12+ (KIP-890 part 2): the partition joins the transaction implicitly.
    let add = version >= 12;
    let coordinator = match broker.txn_coordinator_at(id.0.as_str()) {
        TxnCoordinatorAt::Here => None,
        TxnCoordinatorAt::There(coordinator) => Some(coordinator),
        TxnCoordinatorAt::Unavailable => {
            return refused(
                txn_verification::NOT_ENOUGH_REPLICAS,
                "the transaction coordinator is not available".into(),
            )
        }
    };
    if let Some(coordinator) = coordinator {
        let token = partition.begin_txn_verification(producer.0);
        let verified = block_in_place_or_run(|| {
            txn_verification::verify_with(
                &broker.inter_broker,
                &coordinator,
                id.0.as_str(),
                producer,
                &target,
                add,
            )
        });
        return match verified {
            Ok(()) => partition.append_verified(
                records,
                broker.clock.now_ms(),
                AppendOrigin::Client,
                producer.0,
                token,
            ),
            Err((c, m)) => refused(c, m),
        };
    }
    // Under the coordinator's lock, which a replicating state change may hold: off the
    // runtime's workers.
    block_in_place_or_run(|| {
        broker
            .txns
            .append_in_txn(broker, id.0.as_str(), producer, &target, add, || {
                partition.append(records, AppendOrigin::Client, broker.clock.now_ms())
            })
    })
    .unwrap_or_else(|TxnError(c, m)| {
        // The partition leader reports a fenced producer as INVALID_PRODUCER_EPOCH.
        let c = if c == txn_code::PRODUCER_FENCED {
            txn_code::INVALID_PRODUCER_EPOCH
        } else {
            c
        };
        refused(c, m)
    })
}

/// Whether `topic`'s cleanup.policy includes compact (its records must have keys).
fn compacted(broker: &Broker, topic: &str) -> bool {
    broker
        .topic_config_value(topic, "cleanup.policy")
        .split(',')
        .any(|p| p.trim() == "compact")
}
