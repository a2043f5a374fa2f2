//! The table of API version ranges Gregor really implements.
//!
//! This is the single source of truth for three things: what ApiVersions advertises, which
//! requests the broker decodes (anything outside is answered UNSUPPORTED_VERSION), and which
//! layouts the request guard (`crate::guard`) must know. Add a row only together with a
//! handler that implements every version in it.

use kafka_protocol::messages::ApiKey;

/// One implemented API: its key and the inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn range(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange { key, min, max }
}

/// Every API the broker serves, with the versions it serves.
pub const SUPPORTED: &[ApiRange] = &[
    range(ApiKey::Produce, 3, 12),
    range(ApiKey::Fetch, 4, 12),
    range(ApiKey::ListOffsets, 1, 7),
    range(ApiKey::OffsetForLeaderEpoch, 2, 4),
    range(ApiKey::Metadata, 0, 12),
    range(ApiKey::ApiVersions, 0, 4),
    range(ApiKey::CreateTopics, 2, 7),
    range(ApiKey::DeleteTopics, 1, 6),
    range(ApiKey::DescribeConfigs, 1, 4),
    range(ApiKey::AlterConfigs, 0, 2),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::IncrementalAlterConfigs, 0, 1),
    range(ApiKey::DescribeCluster, 0, 1),
    range(ApiKey::DescribeQuorum, 0, 1),
    range(ApiKey::FindCoordinator, 0, 4),
    range(ApiKey::JoinGroup, 0, 9),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 5),
    range(ApiKey::OffsetCommit, 2, 9),
    range(ApiKey::OffsetFetch, 1, 9),
    range(ApiKey::ListGroups, 0, 5),
    range(ApiKey::DescribeGroups, 0, 5),
    range(ApiKey::DeleteGroups, 0, 2),
    range(ApiKey::OffsetDelete, 0, 0),
    range(ApiKey::DeleteRecords, 0, 2),
    range(ApiKey::InitProducerId, 0, 4),
    range(ApiKey::AddPartitionsToTxn, 0, 5),
    range(ApiKey::AddOffsetsToTxn, 0, 4),
    range(ApiKey::TxnOffsetCommit, 0, 5),
    range(ApiKey::EndTxn, 0, 5),
    range(ApiKey::ListTransactions, 0, 1),
    range(ApiKey::DescribeTransactions, 0, 0),
    range(ApiKey::DescribeProducers, 0, 0),
    range(ApiKey::WriteTxnMarkers, 1, 1),
    range(ApiKey::ElectLeaders, 0, 2),
    range(ApiKey::AlterPartitionReassignments, 0, 1),
    range(ApiKey::ListPartitionReassignments, 0, 0),
    range(ApiKey::DescribeTopicPartitions, 0, 0),
];

/// The implemented range for `key`, if the broker serves that API at all.
pub fn supported_range(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED.iter().copied().find(|r| r.key == key)
}

/// Whether `version` of `key` is implemented.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_range(key).is_some_and(|r| (r.min..=r.max).contains(&version))
}

/// The version range the `kafka-protocol` crate decodes for each request this broker serves;
/// tests check the version table and the guard's layouts against it.
#[cfg(test)]
pub(crate) fn codec_range(key: ApiKey) -> kafka_protocol::protocol::VersionRange {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;
    match key {
        ApiKey::Produce => ProduceRequest::VERSIONS,
        ApiKey::Fetch => FetchRequest::VERSIONS,
        ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
        ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::VERSIONS,
        ApiKey::Metadata => MetadataRequest::VERSIONS,
        ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
        ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
        ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
        ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
        ApiKey::AlterConfigs => AlterConfigsRequest::VERSIONS,
        ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
        ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS,
        ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
        ApiKey::DescribeQuorum => DescribeQuorumRequest::VERSIONS,
        ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
        ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
        ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
        ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
        ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
        ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
        ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
        ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
        ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
        ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
        ApiKey::OffsetDelete => OffsetDeleteRequest::VERSIONS,
        ApiKey::DeleteRecords => DeleteRecordsRequest::VERSIONS,
        ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
        ApiKey::AddPartitionsToTxn => AddPartitionsToTxnRequest::VERSIONS,
        ApiKey::AddOffsetsToTxn => AddOffsetsToTxnRequest::VERSIONS,
        ApiKey::TxnOffsetCommit => TxnOffsetCommitRequest::VERSIONS,
        ApiKey::EndTxn => EndTxnRequest::VERSIONS,
        ApiKey::ListTransactions => ListTransactionsRequest::VERSIONS,
        ApiKey::DescribeTransactions => DescribeTransactionsRequest::VERSIONS,
        ApiKey::DescribeProducers => DescribeProducersRequest::VERSIONS,
        ApiKey::WriteTxnMarkers => WriteTxnMarkersRequest::VERSIONS,
        ApiKey::ElectLeaders => ElectLeadersRequest::VERSIONS,
        ApiKey::AlterPartitionReassignments => AlterPartitionReassignmentsRequest::VERSIONS,
        ApiKey::ListPartitionReassignments => ListPartitionReassignmentsRequest::VERSIONS,
        ApiKey::DescribeTopicPartitions => DescribeTopicPartitionsRequest::VERSIONS,
        ApiKey::BrokerRegistration => BrokerRegistrationRequest::VERSIONS,
        ApiKey::BrokerHeartbeat => BrokerHeartbeatRequest::VERSIONS,
        ApiKey::AlterPartition => AlterPartitionRequest::VERSIONS,
        ApiKey::AllocateProducerIds => AllocateProducerIdsRequest::VERSIONS,
        other => panic!("no codec check for {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every advertised range must lie inside what the codec crate can decode.
    #[test]
    fn advertised_ranges_are_decodable() {
        for r in SUPPORTED {
            let codec = codec_range(r.key);
            assert!(codec.min <= r.min && r.max <= codec.max, "{:?}", r.key);
            assert!(r.min <= r.max);
        }
    }
}
