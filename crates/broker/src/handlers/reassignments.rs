//! AlterPartitionReassignments (API 45) and ListPartitionReassignments (API 46): moving
//! partitions' replicas (`gregor_metadata::reassignment`, run by the active controller) and
//! the reassignments under way, as this broker's image has them.

use gregor_metadata::controller_op::WireRefusal;
use gregor_metadata::{ControllerError, ControllerOp, ControllerReply};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::wire::{code, commit_error, controller_error, s, NONE};
use crate::broker::Broker;

/// One item as this broker checked it: its target (`None`: cancel) to send on, or the
/// error code and message it is refused with here.
type Checked = Result<Option<Vec<i32>>, (i16, String)>;

pub fn alter(
    broker: &Broker,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let image = broker.image();
    // Each item with a refusal found here (KIP-860: a replica count change when the client
    // does not allow one), else sent to the controller.
    let mut checked: Vec<(String, i32, Checked)> = Vec::new();
    for t in &request.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let target: Option<Vec<i32>> =
                p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
            let current = image
                .topic(&name)
                .and_then(|topic| topic.partitions.get(&p.partition_index))
                .map(|p| p.original_replicas().len());
            let refused = match (&target, current) {
                (Some(target), Some(current))
                    if !request.allow_replication_factor_change && target.len() != current =>
                {
                    Some((
                        code(ResponseError::InvalidReplicationFactor),
                        format!(
                            "the target has {} replicas where {name}-{} has {current}, and the request does not allow a replication factor change",
                            target.len(),
                            p.partition_index
                        ),
                    ))
                }
                _ => None,
            };
            checked.push((
                name.clone(),
                p.partition_index,
                refused.map_or(Ok(target), Err),
            ));
        }
    }
    let items: Vec<(String, i32, Option<Vec<i32>>)> = checked
        .iter()
        .filter_map(|(t, p, r)| {
            r.as_ref()
                .ok()
                .map(|target| (t.clone(), *p, target.clone()))
        })
        .collect();
    let answers: Result<Vec<Result<(), WireRefusal>>, (i16, String)> = if items.is_empty() {
        Ok(Vec::new())
    } else {
        match broker.commit(ControllerOp::AlterReassignments { items }) {
            Ok(ControllerReply::Reassignments(outcomes)) => Ok(outcomes),
            Ok(other) => unreachable!("reassignments answer per item, not {other:?}"),
            Err(e) => Err(commit_error(&e)),
        }
    };
    let (top_code, top_message) = match &answers {
        Ok(_) => (NONE, None),
        Err((c, m)) => (*c, Some(m.clone())),
    };
    let mut outcomes = answers.unwrap_or_default().into_iter();
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for (topic, partition, r) in checked {
        let (c, m) = match r {
            Err((c, m)) => (c, Some(m)),
            Ok(_) => match outcomes.next() {
                Some(Ok(())) => (NONE, None),
                Some(Err(refusal)) => {
                    let (c, m) = controller_error(&ControllerError::from(refusal));
                    (c, Some(m))
                }
                None => (top_code, top_message.clone()),
            },
        };
        let result = ReassignablePartitionResponse::default()
            .with_partition_index(partition)
            .with_error_code(c)
            .with_error_message(m.map(s));
        match responses.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partitions.push(result),
            _ => responses.push(
                ReassignableTopicResponse::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![result]),
            ),
        }
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change)
        .with_error_code(top_code)
        .with_error_message(top_message.map(s))
        .with_responses(responses)
}

pub fn list(
    broker: &Broker,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = broker.image();
    let ids = |v: &[i32]| v.iter().map(|&b| BrokerId(b)).collect::<Vec<_>>();
    let ongoing = |p: &gregor_metadata::PartitionImage| {
        OngoingPartitionReassignment::default()
            .with_partition_index(p.partition)
            .with_replicas(ids(&p.replicas))
            .with_adding_replicas(ids(&p.adding_replicas))
            .with_removing_replicas(ids(&p.removing_replicas))
    };
    let topics = match request.topics {
        // Every reassignment under way.
        None => image
            .topics
            .values()
            .filter_map(|t| {
                let partitions: Vec<_> = t
                    .partitions
                    .values()
                    .filter(|p| p.is_reassigning())
                    .map(ongoing)
                    .collect();
                (!partitions.is_empty()).then(|| {
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(s(t.name.clone())))
                        .with_partitions(partitions)
                })
            })
            .collect(),
        // The named partitions that are moving (others, unknown ones included, are left
        // out, as Kafka does).
        Some(asked) => asked
            .iter()
            .filter_map(|a| {
                let t = image.topic(a.name.0.as_str())?;
                let partitions: Vec<_> = a
                    .partition_indexes
                    .iter()
                    .filter_map(|i| t.partitions.get(i))
                    .filter(|p| p.is_reassigning())
                    .map(ongoing)
                    .collect();
                (!partitions.is_empty()).then(|| {
                    OngoingTopicReassignment::default()
                        .with_name(a.name.clone())
                        .with_partitions(partitions)
                })
            })
            .collect(),
    };
    ListPartitionReassignmentsResponse::default()
        .with_error_code(NONE)
        .with_topics(topics)
}
