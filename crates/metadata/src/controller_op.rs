//! Controller operations as values, so that a node that is not the active controller can
//! forward one to the node that is (over the quorum's connections), and get its outcome
//! back. The active controller runs each through [`Controller::execute`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::balance::{ElectionKind, ElectionResult};
use crate::controller::{Controller, ControllerError, NewTopic};

/// One change a controller validates and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerOp {
    CreateTopic {
        name: String,
        num_partitions: i32,
        replication_factor: i16,
        configs: Vec<(String, String)>,
        validate_only: bool,
        /// A manual replica assignment, one list per partition (empty: placed by the
        /// controller).
        #[serde(default)]
        assignment: Vec<Vec<i32>>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: i32,
        /// The new partitions' replicas, in order (empty: placed by the controller).
        #[serde(default)]
        assignment: Vec<Vec<i32>>,
        validate_only: bool,
    },
    AlterTopicConfigs {
        name: String,
        changes: Vec<(String, Option<String>)>,
        validate_only: bool,
    },
    AlterBrokerConfigs {
        node_id: i32,
        changes: Vec<(String, Option<String>)>,
    },
    /// Names the cluster `proposed` unless it already has an id; the reply is the id.
    ClaimClusterId {
        proposed: String,
    },
    /// Starts, replaces or (`None`) cancels partition reassignments.
    AlterReassignments {
        items: Vec<(String, i32, Option<Vec<i32>>)>,
    },
    /// Elects leaders for the named partitions (`None`: all of them).
    ElectLeaders {
        kind: ElectionKind,
        partitions: Option<Vec<(String, Vec<i32>)>>,
    },
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    Done,
    /// The new topic's id (nil for a validate-only creation).
    TopicId(Uuid),
    /// The cluster's id.
    ClusterId(String),
    /// Each partition's election outcome.
    Elections(Vec<ElectionResult>),
    /// Each reassignment item's outcome, in request order.
    Reassignments(Vec<Result<(), WireRefusal>>),
}

/// The outcome of a forwarded operation: its reply and the offset of the last record it
/// wrote (the caller's broker waits until it applied that offset), or why it was refused.
pub type ForwardedOutcome = Result<(ControllerReply, i64), WireRefusal>;

/// A [`ControllerError`] as it crosses the wire: its kind and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRefusal {
    pub kind: RefusalKind,
    pub message: String,
}

/// The kinds of [`ControllerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    TopicAlreadyExists,
    InvalidTopic,
    InvalidPartitions,
    PolicyViolation,
    InvalidReplicationFactor,
    InvalidReplicaAssignment,
    InvalidConfig,
    UnknownTopic,
    Internal,
    NotController,
    Timeout,
    Storage,
    DuplicateBrokerRegistration,
    StaleBrokerEpoch,
    UnknownTopicId,
    FencedLeaderEpoch,
    InvalidRequest,
    InvalidUpdateVersion,
    IneligibleReplica,
    NoReassignmentInProgress,
}

impl From<&ControllerError> for WireRefusal {
    fn from(e: &ControllerError) -> WireRefusal {
        let kind = match e {
            ControllerError::TopicAlreadyExists(_) => RefusalKind::TopicAlreadyExists,
            ControllerError::InvalidTopic(_) => RefusalKind::InvalidTopic,
            ControllerError::InvalidPartitions(_) => RefusalKind::InvalidPartitions,
            ControllerError::PolicyViolation(_) => RefusalKind::PolicyViolation,
            ControllerError::InvalidReplicationFactor(_) => RefusalKind::InvalidReplicationFactor,
            ControllerError::InvalidReplicaAssignment(_) => RefusalKind::InvalidReplicaAssignment,
            ControllerError::InvalidConfig(_) => RefusalKind::InvalidConfig,
            ControllerError::UnknownTopic(_) => RefusalKind::UnknownTopic,
            ControllerError::Internal(_) => RefusalKind::Internal,
            ControllerError::NotController(_) => RefusalKind::NotController,
            ControllerError::Timeout(_) => RefusalKind::Timeout,
            ControllerError::Log(_) => RefusalKind::Storage,
            ControllerError::DuplicateBrokerRegistration(_) => {
                RefusalKind::DuplicateBrokerRegistration
            }
            ControllerError::StaleBrokerEpoch(_) => RefusalKind::StaleBrokerEpoch,
            ControllerError::UnknownTopicId(_) => RefusalKind::UnknownTopicId,
            ControllerError::FencedLeaderEpoch(_) => RefusalKind::FencedLeaderEpoch,
            ControllerError::InvalidRequest(_) => RefusalKind::InvalidRequest,
            ControllerError::InvalidUpdateVersion(_) => RefusalKind::InvalidUpdateVersion,
            ControllerError::IneligibleReplica(_) => RefusalKind::IneligibleReplica,
            ControllerError::NoReassignmentInProgress(_) => RefusalKind::NoReassignmentInProgress,
        };
        WireRefusal {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<WireRefusal> for ControllerError {
    fn from(r: WireRefusal) -> ControllerError {
        let m = r.message;
        match r.kind {
            RefusalKind::TopicAlreadyExists => ControllerError::TopicAlreadyExists(m),
            RefusalKind::InvalidTopic => ControllerError::InvalidTopic(m),
            RefusalKind::InvalidPartitions => ControllerError::InvalidPartitions(m),
            RefusalKind::PolicyViolation => ControllerError::PolicyViolation(m),
            RefusalKind::InvalidReplicationFactor => ControllerError::InvalidReplicationFactor(m),
            RefusalKind::InvalidReplicaAssignment => ControllerError::InvalidReplicaAssignment(m),
            RefusalKind::InvalidConfig => ControllerError::InvalidConfig(m),
            RefusalKind::UnknownTopic => ControllerError::UnknownTopic(m),
            RefusalKind::NotController => ControllerError::NotController(m),
            RefusalKind::Timeout => ControllerError::Timeout(m),
            RefusalKind::DuplicateBrokerRegistration => {
                ControllerError::DuplicateBrokerRegistration(m)
            }
            RefusalKind::StaleBrokerEpoch => ControllerError::StaleBrokerEpoch(m),
            RefusalKind::UnknownTopicId => ControllerError::UnknownTopicId(m),
            RefusalKind::FencedLeaderEpoch => ControllerError::FencedLeaderEpoch(m),
            RefusalKind::InvalidRequest => ControllerError::InvalidRequest(m),
            RefusalKind::InvalidUpdateVersion => ControllerError::InvalidUpdateVersion(m),
            RefusalKind::IneligibleReplica => ControllerError::IneligibleReplica(m),
            RefusalKind::NoReassignmentInProgress => ControllerError::NoReassignmentInProgress(m),
            RefusalKind::Internal | RefusalKind::Storage => ControllerError::Internal(m),
        }
    }
}

impl Controller {
    /// Validates and writes `op`.
    pub fn execute(&mut self, op: ControllerOp) -> Result<ControllerReply, ControllerError> {
        match op {
            ControllerOp::CreateTopic {
                name,
                num_partitions,
                replication_factor,
                configs,
                validate_only,
                assignment,
            } => self
                .create_topic(
                    NewTopic {
                        name: &name,
                        num_partitions,
                        replication_factor,
                        configs: &configs,
                        assignment: &assignment,
                    },
                    validate_only,
                )
                .map(ControllerReply::TopicId),
            ControllerOp::DeleteTopic { name } => {
                self.delete_topic(&name).map(|()| ControllerReply::Done)
            }
            ControllerOp::CreatePartitions {
                name,
                total,
                assignment,
                validate_only,
            } => self
                .create_partitions(&name, total, &assignment, validate_only)
                .map(|()| ControllerReply::Done),
            ControllerOp::AlterTopicConfigs {
                name,
                changes,
                validate_only,
            } => self
                .alter_topic_configs(&name, &changes, validate_only)
                .map(|()| ControllerReply::Done),
            ControllerOp::AlterBrokerConfigs { node_id, changes } => self
                .alter_broker_configs(node_id, &changes)
                .map(|()| ControllerReply::Done),
            ControllerOp::ClaimClusterId { proposed } => self
                .claim_cluster_id(proposed)
                .map(ControllerReply::ClusterId),
            ControllerOp::AlterReassignments { items } => {
                self.alter_partition_reassignments(&items).map(|outcomes| {
                    ControllerReply::Reassignments(
                        outcomes
                            .iter()
                            .map(|o| o.as_ref().map(|_| ()).map_err(WireRefusal::from))
                            .collect(),
                    )
                })
            }
            ControllerOp::ElectLeaders { kind, partitions } => self
                .elect_leaders(kind, partitions.as_deref())
                .map(ControllerReply::Elections),
        }
    }
}
