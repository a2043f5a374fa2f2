//! Classic consumer-group membership: coordinator lookup, topic or pattern subscriptions,
//! JoinGroup/SyncGroup with the configured assignors (eager or cooperative rebalances and
//! the rebalance listener), heartbeats, LeaveGroup, and committed offsets.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, RequestKind,
    ResponseKind, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::assignor::{Assignor, MemberSubscription};
use super::rebalance::{minus, RebalanceListener};
use super::{Consumer, Shared, TopicPartition};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::requests::{by_topic, offset_commit_topics, topic_name};

/// Group membership from the last successful JoinGroup/SyncGroup.
#[derive(Debug, Clone)]
pub(super) struct Membership {
    generation: i32,
    member_id: String,
}

/// A consumer's group identity as a transactional producer needs it to commit offsets in a
/// transaction; the coordinator refuses the commit if the member was fenced by a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    pub group_id: String,
    /// -1 when not a member of the group.
    pub generation_id: i32,
    /// Empty when not a member of the group.
    pub member_id: String,
    /// Static membership id (this consumer does not use static membership: `None`).
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// Metadata for committing to `group_id` without being one of its members.
    pub fn new(group_id: impl Into<String>) -> ConsumerGroupMetadata {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

/// What the application subscribed to.
pub(super) enum Subscription {
    Topics(Vec<String>),
    /// Topics whose whole name matches `regex`, as of the last check of the topic list.
    Pattern {
        regex: regex_lite::Regex,
        topics: Vec<String>,
        next_check: Instant,
    },
}

impl Subscription {
    fn topics(&self) -> &[String] {
        match self {
            Subscription::Topics(t) | Subscription::Pattern { topics: t, .. } => t,
        }
    }
}

/// The version of the subscription and assignment encodings sent (carries owned
/// partitions and the generation, needed by cooperative-sticky).
const CONSUMER_PROTOCOL_VERSION: i16 = 2;

impl Default for Membership {
    fn default() -> Membership {
        Membership {
            generation: -1,
            member_id: String::new(),
        }
    }
}

/// Sends `$request` (the payload of `RequestKind::$variant`) to the group coordinator via
/// `with_coordinator` and yields the future of the `ResponseKind::$variant` body. Shared by
/// the group-membership round trips (JoinGroup, SyncGroup), whose request and response
/// variants differ per API, hence a macro.
macro_rules! coordinator_call {
    ($shared:expr, $variant:ident, $request:expr) => {
        $shared.with_coordinator(|conn| {
            let request = $request.clone();
            async move {
                match conn
                    .send(ApiKey::$variant, &RequestKind::$variant(request))?
                    .await?
                {
                    ResponseKind::$variant(r) => Ok(r),
                    _ => Err(Error::Protocol(
                        concat!("unexpected response to ", stringify!($variant)).into(),
                    )),
                }
            }
        })
    };
}

/// Whether a group error means this member must (re)join.
fn needs_rejoin(e: &Error) -> bool {
    matches!(
        e.response_error(),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::FencedInstanceId
        )
    )
}

/// Whether a group error means this member was fenced and its partitions are lost.
fn is_fenced(e: &Error) -> bool {
    matches!(
        e.response_error(),
        Some(
            ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::FencedInstanceId
        )
    )
}

fn is_coordinator_error(e: &Error) -> bool {
    matches!(
        e.response_error(),
        Some(
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        )
    ) || matches!(e, Error::Network { .. } | Error::RequestTimeout { .. })
}

impl Shared {
    /// Records a group error seen by a heartbeat or commit: rejoin, and when fenced forget
    /// the member id (unknown member) and mark the partitions lost.
    fn on_group_error(&self, e: &Error) {
        if !needs_rejoin(e) {
            return;
        }
        if is_fenced(e) {
            if e.response_error() == Some(ResponseError::UnknownMemberId) {
                *self.membership.lock().unwrap() = Membership::default();
            }
            self.lost.store(true, Ordering::SeqCst);
        }
        self.rejoin.store(true, Ordering::SeqCst);
    }

    pub(super) fn group(&self) -> Result<&str> {
        self.config.group_id.as_deref().ok_or_else(|| {
            Error::IllegalState("this operation needs `group.id` to be configured".into())
        })
    }

    pub(super) async fn coordinator(&self) -> Result<Arc<Connection>> {
        let mut cached = self.coordinator.lock().await;
        if let Some(c) = cached.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let group = self.group()?.to_string();
        let addr = self.cluster.find_coordinator(&group, 0).await?;
        let timeout = self
            .config
            .request_timeout
            .max(self.config.max_poll_interval + Duration::from_secs(5));
        let c = Arc::new(Connection::connect(&addr, &self.config.client_id, timeout).await?);
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` against the coordinator, rediscovering it on coordinator errors.
    async fn with_coordinator<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let result = match self.coordinator().await {
                Ok(c) => op(c).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e)
                    if (is_coordinator_error(&e) || e.is_retriable())
                        && Instant::now() < deadline =>
                {
                    if is_coordinator_error(&e) {
                        *self.coordinator.lock().await = None;
                    }
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
                other => return other,
            }
        }
    }

    pub(super) async fn commit(&self, offsets: &[(String, i32, i64)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let group = self.group()?.to_string();
        let member = self.membership.lock().unwrap().clone();
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_generation_id_or_member_epoch(member.generation)
            .with_member_id(StrBytes::from_string(member.member_id))
            .with_retention_time_ms(-1)
            .with_topics(offset_commit_topics(offsets));
        self.with_coordinator(|conn| {
            let request = request.clone();
            async move {
                let ResponseKind::OffsetCommit(r) = conn
                    .send(ApiKey::OffsetCommit, &RequestKind::OffsetCommit(request))?
                    .await?
                else {
                    return Err(Error::Protocol(
                        "unexpected response to OffsetCommit".into(),
                    ));
                };
                for t in &r.topics {
                    for p in &t.partitions {
                        let what =
                            format!("OffsetCommit {}-{}", t.name.as_str(), p.partition_index);
                        if let Some(e) = Error::broker(p.error_code, Some(what)) {
                            self.on_group_error(&e);
                            return Err(e);
                        }
                    }
                }
                Ok(())
            }
        })
        .await
    }

    pub(super) async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<i64>>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let group = self.group()?.to_string();
        let items: Vec<(String, i32, ())> = partitions
            .iter()
            .map(|(t, p)| (t.clone(), *p, ()))
            .collect();
        let topics: Vec<OffsetFetchRequestTopic> = by_topic(&items)
            .into_iter()
            .map(|(t, ps)| {
                OffsetFetchRequestTopic::default()
                    .with_name(topic_name(&t))
                    .with_partition_indexes(ps.into_iter().map(|(p, _)| p).collect())
            })
            .collect();
        // read_committed: offsets still pending in a transaction are not returned; the
        // coordinator answers UNSTABLE_OFFSET_COMMIT (retriable: retried with backoff below,
        // up to request.timeout.ms) until the transaction ends.
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_require_stable(self.config.isolation_level == 1)
            .with_topics(Some(topics));
        let found: HashMap<TopicPartition, i64> = self
            .with_coordinator(|conn| {
                let request = request.clone();
                let group = group.clone();
                async move {
                    let ResponseKind::OffsetFetch(r) = conn
                        .send(ApiKey::OffsetFetch, &RequestKind::OffsetFetch(request))?
                        .await?
                    else {
                        return Err(Error::Protocol("unexpected response to OffsetFetch".into()));
                    };
                    if let Some(e) =
                        Error::broker(r.error_code, Some(format!("OffsetFetch {group}")))
                    {
                        return Err(e);
                    }
                    let mut found = HashMap::new();
                    for t in &r.topics {
                        for p in &t.partitions {
                            let what =
                                format!("OffsetFetch {}-{}", t.name.as_str(), p.partition_index);
                            if let Some(e) = Error::broker(p.error_code, Some(what)) {
                                return Err(e);
                            }
                            if p.committed_offset >= 0 {
                                found.insert(
                                    (t.name.to_string(), p.partition_index),
                                    p.committed_offset,
                                );
                            }
                        }
                    }
                    Ok(found)
                }
            })
            .await?;
        Ok(partitions.iter().map(|tp| found.get(tp).copied()).collect())
    }
}

/// Groups partitions by topic for the consumer-protocol encodings.
fn partitions_by_topic(partitions: &[TopicPartition]) -> Vec<(String, Vec<i32>)> {
    let items: Vec<(String, i32, ())> = partitions
        .iter()
        .map(|(t, p)| (t.clone(), *p, ()))
        .collect();
    by_topic(&items)
        .into_iter()
        .map(|(t, ps)| (t, ps.into_iter().map(|(p, _)| p).collect()))
        .collect()
}

/// This member's JoinGroup metadata: its topics, and the partitions it owns in `generation`.
fn encode_subscription(
    topics: &[String],
    owned: &[TopicPartition],
    generation: i32,
) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(CONSUMER_PROTOCOL_VERSION);
    ConsumerProtocolSubscription::default()
        .with_topics(
            topics
                .iter()
                .map(|t| StrBytes::from_string(t.clone()))
                .collect(),
        )
        .with_owned_partitions(
            partitions_by_topic(owned)
                .into_iter()
                .map(|(t, ps)| {
                    OwnedTopic::default()
                        .with_topic(topic_name(&t))
                        .with_partitions(ps)
                })
                .collect(),
        )
        .with_generation_id(generation)
        .encode(&mut buf, CONSUMER_PROTOCOL_VERSION)
        .map_err(|e| Error::Protocol(format!("cannot encode subscription: {e}")))?;
    Ok(buf.freeze())
}

/// A member's JoinGroup metadata as the leader reads it.
fn decode_subscription(member: &JoinGroupResponseMember) -> Result<MemberSubscription> {
    let mut out = MemberSubscription {
        member_id: member.member_id.to_string(),
        generation: -1,
        ..MemberSubscription::default()
    };
    let mut buf = member.metadata.clone();
    if buf.len() >= 2 {
        let version = buf.get_i16();
        let s = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
            .map_err(|e| Error::Protocol(format!("cannot decode subscription: {e}")))?;
        out.topics = s.topics.iter().map(|t| t.to_string()).collect();
        out.owned = s
            .owned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect();
        if version >= 2 {
            out.generation = s.generation_id;
        }
    }
    Ok(out)
}

fn encode_assignment(partitions: &[TopicPartition]) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(
            partitions_by_topic(partitions)
                .into_iter()
                .map(|(t, ps)| {
                    AssignedTopic::default()
                        .with_topic(topic_name(&t))
                        .with_partitions(ps)
                })
                .collect(),
        )
        .encode(&mut buf, 0)
        .map_err(|e| Error::Protocol(format!("cannot encode assignment: {e}")))?;
    Ok(buf.freeze())
}

fn decode_assignment(mut buf: Bytes) -> Result<Vec<TopicPartition>> {
    let mut assigned = Vec::new();
    if buf.len() >= 2 {
        let version = buf.get_i16();
        let a = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
            .map_err(|e| Error::Protocol(format!("cannot decode assignment: {e}")))?;
        for t in a.assigned_partitions {
            assigned.extend(t.partitions.into_iter().map(|p| (t.topic.to_string(), p)));
        }
    }
    assigned.sort();
    Ok(assigned)
}

impl<K, V> Consumer<K, V> {
    /// Joins the consumer group (`group.id`) and consumes the partitions of `topics` that
    /// the group's assignor gives this member. The join happens in `poll`.
    pub fn subscribe<T: Into<String>>(&mut self, topics: Vec<T>) -> Result<()> {
        self.shared.group()?;
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return Err(Error::IllegalState(
                "subscribe needs at least one topic".into(),
            ));
        }
        self.set_subscription(Subscription::Topics(topics));
        Ok(())
    }

    /// Like [`subscribe`](Consumer::subscribe), for every non-internal topic whose whole name
    /// matches `pattern` (`regex-lite` syntax). The topic list is re-read every
    /// `metadata.max.age.ms`; topics created later that match join the subscription.
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        self.shared.group()?;
        let regex = regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            Error::IllegalState(format!("invalid subscription pattern {pattern:?}: {e}"))
        })?;
        self.set_subscription(Subscription::Pattern {
            regex,
            topics: Vec::new(),
            next_check: Instant::now(),
        });
        Ok(())
    }

    fn set_subscription(&mut self, subscription: Subscription) {
        if self.subscription.is_none() {
            self.set_assignment(Vec::new());
        }
        self.subscription = Some(subscription);
        self.shared.rejoin.store(true, Ordering::SeqCst);
    }

    /// Sets the callbacks run around rebalances, replacing any previous listener.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// The subscribed topics (for a pattern, the topics it matched at the last check; empty
    /// when not subscribed).
    pub fn subscription(&self) -> Vec<String> {
        self.subscription
            .as_ref()
            .map(|s| s.topics().to_vec())
            .unwrap_or_default()
    }

    /// This member's id and generation while it is in a group.
    pub fn group_membership(&self) -> Option<(String, i32)> {
        let m = self.shared.membership.lock().unwrap();
        (m.generation >= 0).then(|| (m.member_id.clone(), m.generation))
    }

    /// The group metadata a transactional producer sends with this consumer's offsets
    /// (`Producer::send_offsets_to_transaction`): the group, and the current generation and
    /// member id (-1 and empty when not a group member, e.g. with `assign`). Fails without
    /// `group.id`.
    pub fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        let group_id = self.shared.group()?.to_string();
        let m = self.shared.membership.lock().unwrap();
        Ok(ConsumerGroupMetadata {
            group_id,
            generation_id: m.generation,
            member_id: m.member_id.clone(),
            group_instance_id: None,
        })
    }

    /// For a pattern subscription, re-reads the topic list when `metadata.max.age.ms` has
    /// passed; a change in the matching topics triggers a rejoin.
    pub(super) async fn refresh_pattern(&mut self) {
        let Some(Subscription::Pattern { next_check, .. }) = &self.subscription else {
            return;
        };
        if Instant::now() < *next_check {
            return;
        }
        let all = self.shared.cluster.refresh_all().await;
        let c = &self.shared.config;
        let Some(Subscription::Pattern {
            regex,
            topics,
            next_check,
        }) = &mut self.subscription
        else {
            return;
        };
        match all {
            Ok(all) => {
                *next_check = Instant::now() + c.metadata_max_age;
                let matched: Vec<String> = all.into_iter().filter(|t| regex.is_match(t)).collect();
                if matched != *topics {
                    *topics = matched;
                    self.shared.rejoin.store(true, Ordering::SeqCst);
                }
            }
            Err(e) => {
                tracing::debug!("topic list for the subscription pattern: {e}");
                *next_check = Instant::now() + c.retry_backoff;
            }
        }
    }

    /// Leaves the group (committing positions first when auto commit is on) and drops the
    /// assignment, telling the rebalance listener.
    pub async fn unsubscribe(&mut self) -> Result<()> {
        if self.subscription.take().is_none() {
            return Ok(());
        }
        self.leave_group().await
    }

    /// Gives up the whole assignment, telling the listener: lost when this member was
    /// fenced, revoked otherwise.
    fn release_assignment(&mut self) {
        let lost = self.shared.lost.swap(false, Ordering::SeqCst);
        let all = self.assignment.clone();
        if let (Some(l), false) = (self.listener.as_mut(), all.is_empty()) {
            if lost {
                l.on_partitions_lost(&all);
            } else {
                l.on_partitions_revoked(&all);
            }
        }
        self.set_assignment(Vec::new());
    }

    /// Commits the current positions before a rebalance or leave (auto commit only, and
    /// not when fenced: the commit would be refused).
    async fn commit_before_rebalance(&mut self) {
        let c = &self.shared.config;
        if c.enable_auto_commit
            && !self.assignment.is_empty()
            && !self.shared.lost.load(Ordering::SeqCst)
        {
            if let Err(e) = self.commit_positions().await {
                tracing::debug!("commit before rebalance failed: {e}");
            }
        }
    }

    async fn leave_group(&mut self) -> Result<()> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        self.commit_before_rebalance().await;
        self.release_assignment();
        let member = std::mem::take(&mut *self.shared.membership.lock().unwrap());
        if member.member_id.is_empty() {
            return Ok(());
        }
        let group = self.shared.group()?.to_string();
        let request = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group)))
            .with_member_id(StrBytes::from_string(member.member_id));
        let conn = self.shared.coordinator().await?;
        let ResponseKind::LeaveGroup(r) = conn
            .send(ApiKey::LeaveGroup, &RequestKind::LeaveGroup(request))?
            .await?
        else {
            return Err(Error::Protocol("unexpected response to LeaveGroup".into()));
        };
        match Error::broker(r.error_code, Some("LeaveGroup".into())) {
            Some(e) if !needs_rejoin(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// JoinGroup + SyncGroup until this member has an assignment for a stable generation.
    ///
    /// Eager assignors: the whole assignment is revoked before joining and the new one
    /// assigned after. Cooperative: partitions are kept across the join; afterwards only the
    /// ones taken away are revoked (followed by another rejoin so the group can hand them
    /// over) and only the new ones assigned.
    pub(super) async fn join_group(&mut self) -> Result<()> {
        let Some(subscription) = &self.subscription else {
            return Ok(());
        };
        let topics = subscription.topics().to_vec();
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let c = self.shared.config.clone();
        let group = self.shared.group()?.to_string();
        self.commit_before_rebalance().await;
        if !c.cooperative() {
            self.release_assignment();
        }
        let deadline = Instant::now() + c.max_poll_interval + c.request_timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    op: "join group",
                    pending: 0,
                });
            }
            self.shared.rejoin.store(false, Ordering::SeqCst);
            if self.shared.lost.load(Ordering::SeqCst) {
                self.release_assignment();
            }
            let member = self.shared.membership.lock().unwrap().clone();
            let metadata = encode_subscription(&topics, &self.assignment, member.generation)?;
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_session_timeout_ms(c.session_timeout.as_millis() as i32)
                .with_rebalance_timeout_ms(c.max_poll_interval.as_millis() as i32)
                .with_member_id(StrBytes::from_string(member.member_id))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(
                    c.assignors
                        .iter()
                        .map(|a| {
                            JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str(a.name()))
                                .with_metadata(metadata.clone())
                        })
                        .collect(),
                );
            let join = coordinator_call!(self.shared, JoinGroup, request).await?;
            match ResponseError::try_from_code(join.error_code) {
                None => {}
                Some(ResponseError::MemberIdRequired) => {
                    self.shared.membership.lock().unwrap().member_id = join.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    *self.shared.membership.lock().unwrap() = Membership::default();
                    self.shared.lost.store(true, Ordering::SeqCst);
                    continue;
                }
                Some(ResponseError::RebalanceInProgress) => continue,
                Some(error) => {
                    return Err(Error::Broker {
                        error,
                        message: Some(format!("JoinGroup {group}")),
                    })
                }
            }
            let protocol = join.protocol_name.as_ref().map(|p| p.to_string());
            let assignor = protocol
                .as_deref()
                .and_then(Assignor::from_name)
                .filter(|a| c.assignors.contains(a))
                .ok_or_else(|| {
                    Error::Protocol(format!("group chose unknown assignor {protocol:?}"))
                })?;
            let member_id = join.member_id.to_string();
            let assignments = if join.leader.as_str() == member_id {
                self.assign_partitions(assignor, &join.members).await?
            } else {
                Vec::new()
            };
            let request = SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_generation_id(join.generation_id)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str(assignor.name())))
                .with_assignments(assignments);
            let sync = coordinator_call!(self.shared, SyncGroup, request).await?;
            match ResponseError::try_from_code(sync.error_code) {
                None => {}
                Some(ResponseError::UnknownMemberId) => {
                    *self.shared.membership.lock().unwrap() = Membership::default();
                    self.shared.lost.store(true, Ordering::SeqCst);
                    continue;
                }
                Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => {
                    self.shared.membership.lock().unwrap().member_id = member_id;
                    continue;
                }
                Some(error) => {
                    return Err(Error::Broker {
                        error,
                        message: Some(format!("SyncGroup {group}")),
                    })
                }
            }
            let assigned = decode_assignment(sync.assignment.clone())?;
            *self.shared.membership.lock().unwrap() = Membership {
                generation: join.generation_id,
                member_id,
            };
            self.apply_assignment(assigned);
            self.start_heartbeat();
            return Ok(());
        }
    }

    /// Installs the assignment SyncGroup returned, telling the listener what changed. Any
    /// partition taken away (cooperative only: eager members own nothing here) is revoked
    /// and a rejoin requested so the group can give it to its new owner.
    fn apply_assignment(&mut self, assigned: Vec<TopicPartition>) {
        let revoked = minus(&self.assignment, &assigned);
        let added = minus(&assigned, &self.assignment);
        if !revoked.is_empty() {
            if let Some(l) = self.listener.as_mut() {
                l.on_partitions_revoked(&revoked);
            }
            self.shared.rejoin.store(true, Ordering::SeqCst);
        }
        self.set_assignment(assigned);
        if let Some(l) = self.listener.as_mut() {
            l.on_partitions_assigned(&added);
        }
    }

    /// The leader's job: run `assignor` over the members' subscriptions.
    async fn assign_partitions(
        &self,
        assignor: Assignor,
        members: &[JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        let subs = members
            .iter()
            .map(decode_subscription)
            .collect::<Result<Vec<_>>>()?;
        let mut all: Vec<String> = subs.iter().flat_map(|s| s.topics.clone()).collect();
        all.sort();
        all.dedup();
        if !all.is_empty() {
            self.shared.cluster.refresh(&all).await?;
        }
        let counts: HashMap<String, i32> = self.shared.cluster.with_cache(|c| {
            all.iter()
                .filter_map(|t| c.partition_count(t).map(|n| (t.clone(), n)))
                .collect()
        });
        assignor
            .assign(&subs, &counts)
            .into_iter()
            .map(|(member, partitions)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member))
                    .with_assignment(encode_assignment(&partitions)?))
            })
            .collect()
    }

    fn start_heartbeat(&mut self) {
        let shared = self.shared.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(shared.config.heartbeat_interval).await;
                if shared.rejoin.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(group) = shared.group() else { return };
                let member = shared.membership.lock().unwrap().clone();
                let request = HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                    .with_generation_id(member.generation)
                    .with_member_id(StrBytes::from_string(member.member_id));
                let result = match shared.coordinator().await {
                    Ok(conn) => {
                        match conn.send(ApiKey::Heartbeat, &RequestKind::Heartbeat(request)) {
                            Ok(f) => f.await,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                let error = match result {
                    Ok(ResponseKind::Heartbeat(r)) => Error::broker(r.error_code, None),
                    Ok(_) => Some(Error::Protocol("unexpected response to Heartbeat".into())),
                    Err(e) => Some(e),
                };
                match error {
                    None => {}
                    Some(e) if needs_rejoin(&e) => {
                        shared.on_group_error(&e);
                        return;
                    }
                    Some(e) => {
                        tracing::debug!("heartbeat failed: {e}");
                        if is_coordinator_error(&e) {
                            *shared.coordinator.lock().await = None;
                        }
                    }
                }
            }
        }));
    }
}
