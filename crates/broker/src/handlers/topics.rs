//! CreateTopics, DeleteTopics and CreatePartitions: admin changes through the controller.

use gregor_metadata::controller::check_partition_bound;
use gregor_metadata::{ControllerOp, ControllerReply};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};

use super::configs::topic_entries;
use super::wire::{code, commit_error, s, NONE};
use crate::broker::Broker;

pub fn create_topics(
    broker: &Broker,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let config = broker.config();
    let mut seen = std::collections::HashSet::new();
    let mut requested = 0i32;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            let fail = |c: ResponseError, m: String| {
                result
                    .clone()
                    .with_error_code(code(c))
                    .with_error_message(Some(s(m)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            };
            if !seen.insert(name.clone()) {
                return fail(
                    ResponseError::InvalidRequest,
                    format!("topic '{name}' appears more than once in the request"),
                );
            }
            let (mut partitions, mut rf) = (t.num_partitions, t.replication_factor);
            if !t.assignments.is_empty() {
                if partitions != -1 || rf != -1 {
                    return fail(
                        ResponseError::InvalidRequest,
                        "both a replica assignment and partitions/replication factor were given"
                            .into(),
                    );
                }
                let image = broker.image();
                let unknown = t
                    .assignments
                    .iter()
                    .flat_map(|a| a.broker_ids.iter())
                    .find(|b| !image.brokers.contains_key(&b.0));
                if let Some(b) = unknown {
                    return fail(
                        ResponseError::InvalidReplicaAssignment,
                        format!("broker {} does not exist", b.0),
                    );
                }
                partitions = t.assignments.len() as i32;
                rf = t.assignments[0].broker_ids.len() as i16;
                let mut indices: Vec<i32> =
                    t.assignments.iter().map(|a| a.partition_index).collect();
                indices.sort_unstable();
                if indices != (0..partitions).collect::<Vec<_>>() {
                    return fail(
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "the assignment must name partitions 0 to {} once each",
                            partitions - 1
                        ),
                    );
                }
            }
            let mut assignment: Vec<(i32, Vec<i32>)> = t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect();
            assignment.sort_unstable_by_key(|(index, _)| *index);
            if partitions == -1 {
                partitions = config.num_partitions();
            }
            if rf == -1 {
                rf = config.default_replication_factor();
            }
            // The whole request is bounded too, not only each topic (the controller checks
            // each one): topics past the bound are refused, the others are created.
            if partitions > 0 {
                let total = requested.saturating_add(partitions);
                if let Err(e) = check_partition_bound(total) {
                    return fail(ResponseError::PolicyViolation, e.to_string());
                }
                requested = total;
            }
            let configs: Vec<(String, String)> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            let created = broker.commit(ControllerOp::CreateTopic {
                name: name.clone(),
                num_partitions: partitions,
                replication_factor: rf,
                configs: configs.clone(),
                validate_only: request.validate_only,
                assignment: assignment
                    .into_iter()
                    .map(|(_, replicas)| replicas)
                    .collect(),
            });
            match created {
                Ok(reply) => {
                    let topic_id = match reply {
                        ControllerReply::TopicId(id) => id,
                        _ => Default::default(),
                    };
                    let mut ok = result
                        .with_error_code(NONE)
                        .with_topic_id(topic_id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(rf);
                    if version >= 5 {
                        let entries = topic_entries(broker, &name, &configs)
                            .into_iter()
                            .map(|e| {
                                CreatableTopicConfigs::default()
                                    .with_name(s(e.name))
                                    .with_value(e.value.map(s))
                                    .with_config_source(e.source)
                                    .with_read_only(false)
                            })
                            .collect();
                        ok = ok.with_configs(Some(entries));
                    }
                    ok
                }
                Err(e) => {
                    let (c, m) = commit_error(&e);
                    result
                        .with_error_code(c)
                        .with_error_message(Some(s(m)))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub fn delete_topics(
    broker: &Broker,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v6 names topics by name or id; earlier versions by name only.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let image = broker.image();
            let name = name.or_else(|| image.topic_by_id(&id).map(|t| t.name.clone()));
            let result = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(s(n))))
                .with_topic_id(id);
            let Some(name) = name else {
                return result
                    .with_error_code(code(ResponseError::UnknownTopicId))
                    .with_error_message(Some(s(format!("no topic has id {id}"))));
            };
            let topic_id = image.topic(&name).map(|t| t.topic_id).unwrap_or(id);
            match broker.commit(ControllerOp::DeleteTopic { name: name.clone() }) {
                Ok(_) => result.with_error_code(NONE).with_topic_id(topic_id),
                Err(e) => {
                    let (c, m) = commit_error(&e);
                    result.with_error_code(c).with_error_message(Some(s(m)))
                }
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let assignment = t
                .assignments
                .iter()
                .flatten()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect();
            match broker.commit(ControllerOp::CreatePartitions {
                name: name.clone(),
                total: t.count,
                assignment,
                validate_only: request.validate_only,
            }) {
                Ok(_) => result.with_error_code(NONE),
                Err(e) => {
                    let (c, m) = commit_error(&e);
                    result.with_error_code(c).with_error_message(Some(s(m)))
                }
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
