//! The rebalance listener: tells the application which partitions it gains and gives up
//! as group membership changes.

use super::TopicPartition;

/// Callbacks run inside `poll` (or `unsubscribe`/`close`) around group rebalances.
///
/// With an eager assignor (range, roundrobin) every rebalance revokes the whole assignment
/// and then assigns the new one. With cooperative-sticky only the partitions that change
/// hands are revoked or assigned. `on_partitions_assigned` runs after every completed
/// rebalance, possibly with an empty set.
pub trait RebalanceListener: Send + Sync {
    /// These partitions are being given up in an orderly way; commit their offsets here if
    /// auto commit is off.
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}

    /// These partitions were added to the assignment.
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}

    /// These partitions were lost: the member was fenced (unknown member id, stale
    /// generation), so others may already own them and committing is pointless. Defaults to
    /// [`on_partitions_revoked`](RebalanceListener::on_partitions_revoked), as in Kafka.
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

/// `a` without the partitions in `b`, in `a`'s order.
pub(crate) fn minus(a: &[TopicPartition], b: &[TopicPartition]) -> Vec<TopicPartition> {
    a.iter().filter(|tp| !b.contains(tp)).cloned().collect()
}
