//! ElectLeaders (API 43): an operator's preferred or unclean election, run by the active
//! controller (`gregor_metadata::balance`), answered per partition with Kafka's errors.

use gregor_metadata::balance::{ElectionKind, ElectionOutcome, ElectionResult};
use gregor_metadata::{ControllerOp, ControllerReply};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::wire::{code, commit_error, s, NONE};
use crate::broker::Broker;

pub fn handle(broker: &Broker, request: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    let asked: Option<Vec<(String, Vec<i32>)>> = request.topic_partitions.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    // Version 0 knows only preferred elections.
    let kind = match (version, request.election_type) {
        (0, _) | (_, 0) => Some(ElectionKind::Preferred),
        (_, 1) => Some(ElectionKind::Unclean),
        _ => None,
    };
    let failed = |c: i16, m: String| {
        let results = asked
            .iter()
            .flatten()
            .map(|(topic, ps)| {
                let partitions = ps
                    .iter()
                    .map(|&p| {
                        PartitionResult::default()
                            .with_partition_id(p)
                            .with_error_code(c)
                            .with_error_message(Some(s(m.clone())))
                    })
                    .collect();
                ReplicaElectionResult::default()
                    .with_topic(TopicName(s(topic.clone())))
                    .with_partition_result(partitions)
            })
            .collect();
        ElectLeadersResponse::default()
            .with_error_code(if version >= 1 { c } else { NONE })
            .with_replica_election_results(results)
    };
    let Some(kind) = kind else {
        return failed(
            code(ResponseError::InvalidRequest),
            format!("unknown election type {}", request.election_type),
        );
    };
    let op = ControllerOp::ElectLeaders {
        kind,
        partitions: asked.clone(),
    };
    match broker.commit(op) {
        Ok(ControllerReply::Elections(results)) => ElectLeadersResponse::default()
            .with_error_code(NONE)
            .with_replica_election_results(by_topic(results)),
        Ok(other) => unreachable!("an election answers with its results, not {other:?}"),
        Err(e) => {
            let (c, m) = commit_error(&e);
            failed(c, m)
        }
    }
}

/// The results grouped by topic, in the order they came.
fn by_topic(results: Vec<ElectionResult>) -> Vec<ReplicaElectionResult> {
    let mut out: Vec<ReplicaElectionResult> = Vec::new();
    for r in results {
        let (c, m) = outcome_error(&r.outcome);
        let partition = PartitionResult::default()
            .with_partition_id(r.partition)
            .with_error_code(c)
            .with_error_message(m.map(s));
        match out.last_mut() {
            Some(last) if last.topic.0.as_str() == r.topic => last.partition_result.push(partition),
            _ => out.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(s(r.topic)))
                    .with_partition_result(vec![partition]),
            ),
        }
    }
    out
}

/// The error code and message of one partition's outcome.
fn outcome_error(outcome: &ElectionOutcome) -> (i16, Option<String>) {
    match outcome {
        ElectionOutcome::Elected(_) => (NONE, None),
        ElectionOutcome::NotNeeded => (
            code(ResponseError::ElectionNotNeeded),
            Some("the partition already has the leader this election would give it".into()),
        ),
        ElectionOutcome::PreferredNotAvailable(m) => (
            code(ResponseError::PreferredLeaderNotAvailable),
            Some(m.clone()),
        ),
        ElectionOutcome::EligibleNotAvailable(m) => (
            code(ResponseError::EligibleLeadersNotAvailable),
            Some(m.clone()),
        ),
        ElectionOutcome::UnknownPartition => (
            code(ResponseError::UnknownTopicOrPartition),
            Some("the topic or partition does not exist".into()),
        ),
    }
}
