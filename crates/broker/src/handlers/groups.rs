//! The classic consumer-group APIs on the wire: FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups and OffsetDelete. Each translates between the request's version-specific
//! shape and the coordinator (`crate::group::coordinator`), which holds the semantics.

use gregor_metadata::image::BrokerImage;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::wire::{code, s, NONE};
use crate::broker::Broker;
use crate::group::coordinator::CommittedOffset;
use crate::group::state::JoinRequest;
use crate::internal_topic::{OFFSETS_TOPIC, TXN_STATE_TOPIC};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The broker coordinating `key` (`Err`: the error code and message to answer with). The
/// coordinator is the leader of the key's partition of the internal topic, as the published
/// metadata names it, so the answer follows leadership when partitions move.
fn coordinator_for(broker: &Broker, key: &str, key_type: i8) -> Result<BrokerImage, (i16, String)> {
    let (ensure, empty_key_error): (fn(&Broker) -> _, _) = match key_type {
        KEY_TYPE_GROUP => (Broker::ensure_offsets_topic, ResponseError::InvalidGroupId),
        KEY_TYPE_TRANSACTION => (
            Broker::ensure_txn_state_topic,
            ResponseError::InvalidRequest,
        ),
        _ => {
            return Err((
                code(ResponseError::InvalidRequest),
                format!(
                    "coordinator key type {key_type} is not supported (0: group, 1: transaction)"
                ),
            ))
        }
    };
    if key.is_empty() {
        return Err((code(empty_key_error), "the coordinator key is empty".into()));
    }
    if let Err(e) = ensure(broker) {
        tracing::warn!(error = %e, "cannot create an internal topic");
        return Err((code(ResponseError::CoordinatorNotAvailable), e.to_string()));
    }
    let (topic, partition) = if key_type == KEY_TYPE_GROUP {
        (OFFSETS_TOPIC, broker.groups.partition_for(key))
    } else {
        (TXN_STATE_TOPIC, broker.txns.partition_for(key))
    };
    let image = broker.image();
    image
        .topic(topic)
        .and_then(|t| t.partitions.get(&partition))
        .and_then(|p| image.brokers.get(&p.leader))
        .filter(|b| !b.fenced)
        .cloned()
        .ok_or_else(|| {
            (
                code(ResponseError::CoordinatorNotAvailable),
                format!("{topic}-{partition} has no leader"),
            )
        })
}

pub fn find_coordinator(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match coordinator_for(broker, key.as_str(), request.key_type) {
                    Ok(node) => c
                        .with_error_code(NONE)
                        .with_node_id(BrokerId(node.node_id))
                        .with_host(s(node.host))
                        .with_port(node.port as i32),
                    Err((error, message)) => c
                        .with_error_code(error)
                        .with_error_message(Some(s(message)))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match coordinator_for(broker, request.key.as_str(), request.key_type) {
        Ok(node) => FindCoordinatorResponse::default()
            .with_error_code(NONE)
            .with_node_id(BrokerId(node.node_id))
            .with_host(s(node.host))
            .with_port(node.port as i32),
        Err((error, message)) => FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_error_message(Some(s(message)))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}

pub async fn join_group(
    broker: &Broker,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
) -> JoinGroupResponse {
    let req = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client_id.to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        return JoinGroupResponse::default()
            .with_error_code(code(ResponseError::InvalidGroupId))
            .with_generation_id(-1)
            .with_member_id(request.member_id);
    }
    let r = broker.groups.join(broker, &group_id, req).await;
    JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(r.protocol.map(s))
        .with_leader(s(r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

pub async fn sync_group(broker: &Broker, request: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let r = broker
        .groups
        .sync(
            broker,
            request.group_id.0.as_str(),
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|i| i.as_str()),
            request.generation_id,
            request.protocol_type.as_ref().map(|p| p.as_str()),
            request.protocol_name.as_ref().map(|p| p.as_str()),
            assignments,
        )
        .await;
    SyncGroupResponse::default()
        .with_error_code(r.error)
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(r.protocol.map(s))
        .with_assignment(r.assignment)
}

pub fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let error = broker.groups.heartbeat(
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(|i| i.as_str()),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(error)
}

pub fn leave_group(
    broker: &Broker,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    match broker
        .groups
        .leave(broker, request.group_id.0.as_str(), &members)
    {
        Err(e) => LeaveGroupResponse::default().with_error_code(e),
        Ok(codes) if version >= 3 => LeaveGroupResponse::default()
            .with_error_code(NONE)
            .with_members(
                members
                    .into_iter()
                    .zip(codes)
                    .map(|((id, instance), c)| {
                        MemberResponse::default()
                            .with_member_id(s(id))
                            .with_group_instance_id(instance.map(s))
                            .with_error_code(c)
                    })
                    .collect(),
            ),
        Ok(codes) => LeaveGroupResponse::default().with_error_code(codes[0]),
    }
}

/// One entry of `GroupCoordinator::commit`: (topic, partition, offset, leader epoch,
/// metadata), from the fields OffsetCommit and TxnOffsetCommit share.
pub fn commit_entry(
    topic: &TopicName,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&StrBytes>,
) -> (String, i32, i64, i32, String) {
    (
        topic.0.to_string(),
        partition,
        offset,
        leader_epoch,
        metadata.map(|m| m.to_string()).unwrap_or_default(),
    )
}

pub async fn offset_commit(broker: &Broker, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let entries = request
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
    let outcome = broker.groups.commit(
        broker,
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(|i| i.as_str()),
        request.generation_id_or_member_epoch,
        entries,
        None,
    );
    let codes = broker.groups.finish_commit(outcome).await;
    let mut codes = codes.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().expect("one code per partition"))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// (partition, committed offset, error code) as OffsetFetch answers it.
type FetchedOffset = (i32, CommittedOffset, i16);

/// Kafka's code for an offset an open transaction is about to change.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// The committed offsets asked for, grouped by topic in request order, each with its error
/// code: with `require_stable`, an offset an open transaction holds is withheld
/// (UNSTABLE_OFFSET_COMMIT, offset -1) so the consumer retries after the transaction ends.
/// A group not served here (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS) gets its error
/// as the group's code and on each partition asked for.
fn fetch_group(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> (Vec<(String, Vec<FetchedOffset>)>, i16) {
    let flat: Option<Vec<(String, i32)>> = wanted.map(|w| {
        w.into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect()
    });
    let fetched = match broker.groups.fetch_offsets(group_id, flat.clone()) {
        Ok(fetched) => fetched,
        Err(error) => {
            let missing = CommittedOffset {
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
            };
            let mut out: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
            for (t, p) in flat.unwrap_or_default() {
                match out.iter_mut().find(|(name, _)| *name == t) {
                    Some((_, ps)) => ps.push((p, missing.clone(), error)),
                    None => out.push((t, vec![(p, missing.clone(), error)])),
                }
            }
            return (out, error);
        }
    };
    let mut out: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for (t, p, mut c) in fetched {
        let mut error = NONE;
        if require_stable && broker.groups.has_pending_txn_offset(group_id, &t, p) {
            error = UNSTABLE_OFFSET_COMMIT;
            c.offset = -1;
            c.metadata.clear();
        }
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, ps)) => ps.push((p, c, error)),
            None => out.push((t, vec![(p, c, error)])),
        }
    }
    (out, NONE)
}

pub fn offset_fetch(
    broker: &Broker,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let (fetched, group_error) = fetch_group(
                    broker,
                    g.group_id.0.as_str(),
                    wanted,
                    request.require_stable,
                );
                let topics = fetched
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(s(t)))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|(p, c, error)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_error_code(error)
                                            .with_committed_offset(c.offset)
                                            .with_committed_leader_epoch(c.leader_epoch)
                                            .with_metadata(Some(s(c.metadata)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(group_error)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let require_stable = version >= 7 && request.require_stable;
    let (fetched, group_error) =
        fetch_group(broker, request.group_id.0.as_str(), wanted, require_stable);
    let topics = fetched
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, c, error)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(error)
                                .with_committed_offset(c.offset)
                                .with_committed_leader_epoch(if version >= 5 {
                                    c.leader_epoch
                                } else {
                                    -1
                                })
                                .with_metadata(Some(s(c.metadata)))
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.with_error_code(group_error)
    } else {
        response
    }
}

pub fn list_groups(
    broker: &Broker,
    request: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_string().to_ascii_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return ListGroupsResponse::default().with_error_code(NONE);
    }
    let groups = broker
        .groups
        .list(&states)
        .into_iter()
        .map(|(id, ptype, state)| {
            let g = ListedGroup::default()
                .with_group_id(GroupId(s(id)))
                .with_protocol_type(s(ptype));
            let g = if version >= 4 {
                g.with_group_state(s(state))
            } else {
                g
            };
            if version >= 5 {
                g.with_group_type(s("classic"))
            } else {
                g
            }
        })
        .collect();
    ListGroupsResponse::default()
        .with_error_code(NONE)
        .with_groups(groups)
}

pub fn describe_groups(broker: &Broker, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let d = match broker.groups.describe(id.0.as_str()) {
                Ok(d) => d,
                Err(error) => {
                    return DescribedGroup::default()
                        .with_error_code(error)
                        .with_group_id(id)
                        .with_authorized_operations(i32::MIN)
                }
            };
            DescribedGroup::default()
                .with_error_code(NONE)
                .with_group_id(id)
                .with_group_state(s(d.state))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol))
                .with_authorized_operations(i32::MIN)
                .with_members(
                    d.members
                        .into_iter()
                        .map(
                            |(member_id, instance, client_id, host, metadata, assignment)| {
                                DescribedGroupMember::default()
                                    .with_member_id(s(member_id))
                                    .with_group_instance_id(instance.map(s))
                                    .with_client_id(s(client_id))
                                    .with_client_host(s(host))
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(assignment)
                            },
                        )
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn delete_groups(broker: &Broker, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .into_iter()
        .map(|id| {
            let error = broker.groups.delete_group(broker, id.0.as_str());
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(error)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}

pub fn offset_delete(broker: &Broker, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    match broker
        .groups
        .delete_offsets(broker, request.group_id.0.as_str(), &partitions)
    {
        Err(e) => OffsetDeleteResponse::default().with_error_code(e),
        Ok(codes) => {
            let mut codes = codes.into_iter();
            let topics = request
                .topics
                .iter()
                .map(|t| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(
                                            codes.next().expect("one code per partition"),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetDeleteResponse::default()
                .with_error_code(NONE)
                .with_topics(topics)
        }
    }
}
