//! Small pieces every handler shares: the no-error code, error-code conversion, protocol
//! strings, and the mapping of broker errors (storage, admin changes) to the Kafka error
//! code and message a client gets. A leaf: handlers import it, it imports no handler.

use gregor_metadata::ControllerError;
use gregor_storage::error::StorageError;
use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

use crate::broker::CommitError;
use crate::metadata_listener::ApplyFailure;

/// Kafka error code for "no error".
pub const NONE: i16 = 0;

/// The wire code of `e`.
pub fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A protocol string from Rust text.
pub fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// KIP-320's check of the leader epoch a client names (`current`, -1: none) against the
/// partition's (`epoch`): FENCED_LEADER_EPOCH for an older one, UNKNOWN_LEADER_EPOCH for a
/// newer one this broker has not learned yet.
pub fn leader_epoch_error(current: i32, epoch: i32) -> Option<ResponseError> {
    if current >= 0 && current < epoch {
        Some(ResponseError::FencedLeaderEpoch)
    } else if current > epoch {
        Some(ResponseError::UnknownLeaderEpoch)
    } else {
        None
    }
}

/// KIP-951: the leader and leader epoch the metadata names for a partition a client asked
/// the wrong broker for (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH), if it has a leader.
pub fn current_leader(
    image: &gregor_metadata::MetadataImage,
    topic: &str,
    partition: i32,
) -> Option<(i32, i32)> {
    let p = image.topic(topic)?.partitions.get(&partition)?;
    (p.leader >= 0).then_some((p.leader, p.leader_epoch))
}

/// Kafka error code and message for a storage failure.
pub fn storage_error(e: &StorageError) -> (i16, String) {
    let c = match e {
        StorageError::CorruptMessage(_) => ResponseError::CorruptMessage,
        StorageError::MessageTooLarge(_) => ResponseError::MessageTooLarge,
        StorageError::InvalidRecord(_) => ResponseError::InvalidRecord,
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        _ => ResponseError::KafkaStorageError,
    };
    (code(c), e.to_string())
}

/// Kafka error code and message for a failed admin change.
pub fn commit_error(e: &CommitError) -> (i16, String) {
    let c = match e {
        CommitError::Refused(e) => return controller_error(e),
        CommitError::NotApplied(ApplyFailure::Storage(_)) => ResponseError::KafkaStorageError,
        CommitError::NotApplied(ApplyFailure::Image(_)) => ResponseError::UnknownServerError,
        CommitError::NotApplied(ApplyFailure::NotYet(_)) => ResponseError::RequestTimedOut,
    };
    (code(c), e.to_string())
}

/// Kafka error code and message for a refused controller operation.
pub fn controller_error(e: &ControllerError) -> (i16, String) {
    let c = match e {
        ControllerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::PolicyViolation(_) => ResponseError::PolicyViolation,
        ControllerError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::InvalidConfig(_) => ResponseError::InvalidConfig,
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::Internal(_) => ResponseError::UnknownServerError,
        ControllerError::NotController(_) => ResponseError::NotController,
        ControllerError::Timeout(_) => ResponseError::RequestTimedOut,
        ControllerError::Log(_) => ResponseError::KafkaStorageError,
        ControllerError::DuplicateBrokerRegistration(_) => {
            ResponseError::DuplicateBrokerRegistration
        }
        ControllerError::StaleBrokerEpoch(_) => ResponseError::StaleBrokerEpoch,
        ControllerError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
        ControllerError::FencedLeaderEpoch(_) => ResponseError::FencedLeaderEpoch,
        ControllerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ControllerError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
        ControllerError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
        ControllerError::NoReassignmentInProgress(_) => ResponseError::NoReassignmentInProgress,
    };
    (code(c), e.to_string())
}
