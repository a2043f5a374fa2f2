//! The classic consumer-group protocol as a pure state machine: no I/O, no clock, no async.
//!
//! Callers pass the current time and a waiter id with each JoinGroup/SyncGroup; answers that
//! cannot be given at once are returned later as [`Completion`]s, from the call that unblocks
//! them or from [`Group::tick`]. The async coordinator routes completions to the waiting
//! requests and persists what [`Effects`] ask for. A KIP-848 group would be another state
//! machine beside this one, sharing the coordinator and the offsets store.
//!
//! States follow Kafka: Empty → PreparingRebalance (members (re)join) → CompletingRebalance
//! (leader computes the assignment) → Stable; any membership change goes back to
//! PreparingRebalance; Dead after deletion.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;

/// Kafka error codes this state machine produces.
pub mod code {
    pub const NONE: i16 = 0;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
}

/// Identifies one waiting request.
pub type WaiterId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses in ListGroups and DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Limits from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
    pub initial_rebalance_delay_ms: i64,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_size: i32::MAX as usize,
            initial_rebalance_delay_ms: 3_000,
        }
    }
}

/// A member of the group.
#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat_ms: i64,
    awaiting_join: Option<WaiterId>,
    awaiting_sync: Option<WaiterId>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394: from JoinGroup v4 a new member must rejoin with the id it is given.
    pub require_known_member_id: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResponse {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata); only the leader gets the list.
    pub members: Vec<(String, Option<String>, Bytes)>,
    pub skip_assignment: bool,
}

impl JoinResponse {
    fn error(error: i16, member_id: &str) -> JoinResponse {
        JoinResponse {
            error,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncResponse {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: i16) -> SyncResponse {
        SyncResponse {
            error,
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

/// A delayed answer for a waiting request.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    Join(WaiterId, JoinResponse),
    Sync(WaiterId, SyncResponse),
}

/// What a call produced besides its own answer.
#[derive(Debug, Default)]
pub struct Effects {
    pub completions: Vec<Completion>,
    /// The group's membership and assignment changed durably (write group metadata).
    pub persist_group: bool,
    /// A rebalance completed: the join phase ended in a new generation.
    pub rebalanced: bool,
}

/// Either an answer now, or "wait": the answer comes later as a completion.
#[derive(Debug, PartialEq)]
pub enum Reply<T> {
    Now(T),
    Later,
}

/// One classic consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id → current member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pending_members: HashMap<String, i64>,
    /// When the join phase of the current rebalance ends at the latest.
    join_deadline_ms: Option<i64>,
    /// While the first rebalance of an empty group waits for more members.
    initial_delay_until_ms: Option<i64>,
    /// When the state last changed (for offset expiry of empty groups).
    pub state_since_ms: i64,
    limits: GroupLimits,
}

impl Group {
    pub fn new(group_id: &str, now_ms: i64, limits: GroupLimits) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            join_deadline_ms: None,
            initial_delay_until_ms: None,
            state_since_ms: now_ms,
            limits,
        }
    }

    /// Rebuilds a group from its stored metadata; members must heartbeat within their
    /// session timeout from `now_ms` or they are removed.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        group_id: &str,
        generation: i32,
        protocol_type: String,
        protocol: Option<String>,
        leader: Option<String>,
        members: Vec<Member>,
        now_ms: i64,
        limits: GroupLimits,
    ) -> Group {
        let mut g = Group::new(group_id, now_ms, limits);
        g.generation = generation;
        g.protocol_type = (!protocol_type.is_empty()).then_some(protocol_type);
        g.protocol = protocol;
        g.leader = leader;
        for mut m in members {
            m.last_heartbeat_ms = now_ms;
            if let Some(i) = &m.group_instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(m.member_id.clone(), m);
        }
        g.state = if g.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g
    }

    /// A stored member, as rebuilt from the offsets topic.
    #[allow(clippy::too_many_arguments)]
    pub fn stored_member(
        member_id: String,
        group_instance_id: Option<String>,
        client_id: String,
        client_host: String,
        rebalance_timeout_ms: i32,
        session_timeout_ms: i32,
        protocol: Option<&str>,
        subscription: Bytes,
        assignment: Bytes,
    ) -> Member {
        Member {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            protocols: protocol
                .map(|p| vec![(p.to_string(), subscription)])
                .unwrap_or_default(),
            assignment,
            last_heartbeat_ms: 0,
            awaiting_join: None,
            awaiting_sync: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether some member's subscription is for the consumer protocol (for OffsetDelete).
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    fn set_state(&mut self, state: GroupState, now_ms: i64) {
        if self.state != state {
            self.state = state;
            self.state_since_ms = now_ms;
        }
    }

    fn new_member_id(client_id: &str) -> String {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    /// Handles JoinGroup.
    pub fn join(
        &mut self,
        req: JoinRequest,
        waiter: WaiterId,
        now_ms: i64,
    ) -> (Reply<JoinResponse>, Effects) {
        let mut fx = Effects::default();
        let limits = self.limits;
        let now = |r: JoinResponse| (Reply::Now(r), Effects::default());
        if req.session_timeout_ms < limits.min_session_timeout_ms
            || req.session_timeout_ms > limits.max_session_timeout_ms
        {
            return now(JoinResponse::error(
                code::INVALID_SESSION_TIMEOUT,
                &req.member_id,
            ));
        }
        if self.state == GroupState::Dead {
            return now(JoinResponse::error(
                code::COORDINATOR_NOT_AVAILABLE,
                &req.member_id,
            ));
        }
        let protocol_ok = !req.protocols.is_empty()
            && !req.protocol_type.is_empty()
            && (self.members.is_empty()
                || (self.protocol_type.as_deref() == Some(req.protocol_type.as_str())
                    && self.supports_any(&req.protocols)));
        if !protocol_ok {
            return now(JoinResponse::error(
                code::INCONSISTENT_GROUP_PROTOCOL,
                &req.member_id,
            ));
        }

        // Static member: the instance id decides who the member is.
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                if !req.member_id.is_empty() && req.member_id != old_id {
                    return now(JoinResponse::error(
                        code::FENCED_INSTANCE_ID,
                        &req.member_id,
                    ));
                }
                if req.member_id.is_empty() {
                    return self.rejoin_static(old_id, req, waiter, now_ms);
                }
            } else if !req.member_id.is_empty() && !self.members.contains_key(&req.member_id) {
                return now(JoinResponse::error(code::UNKNOWN_MEMBER_ID, &req.member_id));
            }
        }

        let member_id = if req.member_id.is_empty() {
            if self.members.len() + self.pending_members.len() >= limits.max_size {
                return now(JoinResponse::error(code::GROUP_MAX_SIZE_REACHED, ""));
            }
            let id = Self::new_member_id(&req.client_id);
            if req.require_known_member_id && req.group_instance_id.is_none() {
                self.pending_members
                    .insert(id.clone(), now_ms + req.session_timeout_ms as i64);
                return now(JoinResponse::error(code::MEMBER_ID_REQUIRED, &id));
            }
            id
        } else if self.pending_members.remove(&req.member_id).is_some() {
            req.member_id.clone()
        } else if !self.members.contains_key(&req.member_id) {
            return now(JoinResponse::error(code::UNKNOWN_MEMBER_ID, &req.member_id));
        } else {
            req.member_id.clone()
        };

        let known = self.members.contains_key(&member_id);
        if known
            && matches!(
                self.state,
                GroupState::Stable | GroupState::CompletingRebalance
            )
        {
            let member = &self.members[&member_id];
            let unchanged = member.protocols == req.protocols;
            let is_leader = self.leader.as_deref() == Some(member_id.as_str());
            if unchanged && !is_leader && self.state == GroupState::Stable {
                // A follower rejoining with the same metadata gets the current generation.
                let response = self.join_response(&member_id, false);
                self.members
                    .get_mut(&member_id)
                    .expect("known")
                    .last_heartbeat_ms = now_ms;
                return (Reply::Now(response), fx);
            }
        }
        if known {
            let m = self.members.get_mut(&member_id).expect("known");
            m.protocols = req.protocols.clone();
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.last_heartbeat_ms = now_ms;
            m.awaiting_join = Some(waiter);
        } else {
            if self.members.len() >= limits.max_size {
                return now(JoinResponse::error(
                    code::GROUP_MAX_SIZE_REACHED,
                    &member_id,
                ));
            }
            if let Some(instance) = &req.group_instance_id {
                self.static_members
                    .insert(instance.clone(), member_id.clone());
            }
            if self.members.is_empty() {
                self.protocol_type = Some(req.protocol_type.clone());
            }
            self.members.insert(
                member_id.clone(),
                Member {
                    member_id: member_id.clone(),
                    group_instance_id: req.group_instance_id.clone(),
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    rebalance_timeout_ms: req.rebalance_timeout_ms,
                    session_timeout_ms: req.session_timeout_ms,
                    protocols: req.protocols.clone(),
                    assignment: Bytes::new(),
                    last_heartbeat_ms: now_ms,
                    awaiting_join: Some(waiter),
                    awaiting_sync: None,
                },
            );
        }
        self.prepare_rebalance(now_ms, !known, &mut fx);
        self.try_complete_join(now_ms, &mut fx);
        let reply = take_join_reply(&mut fx, waiter);
        (reply, fx)
    }

    /// A static member rejoining under a new member id: it takes over the old identity and,
    /// in a stable group, keeps its assignment without a rebalance.
    fn rejoin_static(
        &mut self,
        old_id: String,
        req: JoinRequest,
        waiter: WaiterId,
        now_ms: i64,
    ) -> (Reply<JoinResponse>, Effects) {
        let mut fx = Effects::default();
        let new_id = Self::new_member_id(&req.client_id);
        let mut member = self
            .members
            .remove(&old_id)
            .expect("static member is a member");
        let instance = req.group_instance_id.clone().expect("static");
        // The old incarnation's waiting requests are fenced.
        if let Some(w) = member.awaiting_join.take() {
            fx.completions.push(Completion::Join(
                w,
                JoinResponse::error(code::FENCED_INSTANCE_ID, &old_id),
            ));
        }
        if let Some(w) = member.awaiting_sync.take() {
            fx.completions.push(Completion::Sync(
                w,
                SyncResponse::error(code::FENCED_INSTANCE_ID),
            ));
        }
        let unchanged = member.protocols == req.protocols;
        member.member_id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.last_heartbeat_ms = now_ms;
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        self.static_members.insert(instance, new_id.clone());
        if self.state == GroupState::Stable && unchanged {
            self.members.insert(new_id.clone(), member);
            fx.persist_group = true;
            // The leader is told it is a follower-like rejoin: skip_assignment keeps it from
            // computing a new assignment (KIP-814).
            let mut response = self.join_response(&new_id, false);
            if self.leader.as_deref() == Some(new_id.as_str()) {
                response.members = self.member_list();
                response.skip_assignment = true;
            }
            return (Reply::Now(response), fx);
        }
        member.protocols = req.protocols.clone();
        member.awaiting_join = Some(waiter);
        self.members.insert(new_id, member);
        self.prepare_rebalance(now_ms, false, &mut fx);
        self.try_complete_join(now_ms, &mut fx);
        let reply = take_join_reply(&mut fx, waiter);
        (reply, fx)
    }

    fn supports_any(&self, protocols: &[(String, Bytes)]) -> bool {
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Starts (or extends) a rebalance.
    fn prepare_rebalance(&mut self, now_ms: i64, new_member: bool, fx: &mut Effects) {
        let limits = self.limits;
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0);
        match self.state {
            GroupState::Empty => {
                // The first rebalance of an empty group waits for more members to arrive.
                self.initial_delay_until_ms = Some(now_ms + limits.initial_rebalance_delay_ms);
                self.join_deadline_ms =
                    Some(now_ms + rebalance_timeout.max(limits.initial_rebalance_delay_ms));
            }
            GroupState::PreparingRebalance => {
                if new_member {
                    if let (Some(until), Some(deadline)) =
                        (self.initial_delay_until_ms, self.join_deadline_ms)
                    {
                        // Each new member during the initial delay extends it, up to the
                        // rebalance timeout.
                        self.initial_delay_until_ms = Some(
                            (now_ms + limits.initial_rebalance_delay_ms)
                                .min(deadline)
                                .max(until),
                        );
                    }
                }
                return;
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                // Members waiting for the old assignment must rejoin.
                for m in self.members.values_mut() {
                    if let Some(w) = m.awaiting_sync.take() {
                        fx.completions.push(Completion::Sync(
                            w,
                            SyncResponse::error(code::REBALANCE_IN_PROGRESS),
                        ));
                    }
                }
                self.join_deadline_ms = Some(now_ms + rebalance_timeout);
                self.initial_delay_until_ms = None;
            }
            GroupState::Dead => return,
        }
        self.set_state(GroupState::PreparingRebalance, now_ms);
    }

    /// Ends the join phase when every member has rejoined (and any initial delay passed) or
    /// the deadline passed; members that did not rejoin by the deadline are removed.
    fn try_complete_join(&mut self, now_ms: i64, fx: &mut Effects) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        let delay_over = self.initial_delay_until_ms.is_none_or(|t| now_ms >= t);
        let deadline_passed = self.join_deadline_ms.is_some_and(|t| now_ms >= t);
        if !(deadline_passed || all_joined && delay_over) {
            return;
        }
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in missing {
            self.remove_member(&id);
        }
        self.initial_delay_until_ms = None;
        self.join_deadline_ms = None;
        self.generation += 1;
        fx.persist_group = true;
        fx.rebalanced = true;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, now_ms);
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance, now_ms);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let response = self.join_response(&id, is_leader);
            let m = self.members.get_mut(&id).expect("member");
            m.last_heartbeat_ms = now_ms;
            if let Some(w) = m.awaiting_join.take() {
                fx.completions.push(Completion::Join(w, response));
            }
        }
    }

    fn member_list(&self) -> Vec<(String, Option<String>, Bytes)> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| {
                (
                    m.member_id.clone(),
                    m.group_instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect()
    }

    fn join_response(&self, member_id: &str, with_members: bool) -> JoinResponse {
        JoinResponse {
            error: code::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members {
                self.member_list()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    /// The protocol every member supports that most members prefer (each member votes for
    /// its most preferred candidate).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0usize, *c)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == n) {
                    v.0 += 1;
                }
            }
        }
        // Highest vote wins; ties go to the first member's preference order.
        let best = votes.iter().map(|(v, _)| *v).max()?;
        votes
            .into_iter()
            .find(|(v, _)| *v == best)
            .map(|(_, n)| n.clone())
    }

    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let m = self.members.remove(member_id)?;
        if let Some(i) = &m.group_instance_id {
            if self.static_members.get(i).map(String::as_str) == Some(member_id) {
                self.static_members.remove(i);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        Some(m)
    }

    /// Handles SyncGroup. `assignments` is non-empty only from the leader.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        waiter: WaiterId,
        now_ms: i64,
    ) -> (Reply<SyncResponse>, Effects) {
        let mut fx = Effects::default();
        let now = |e: i16| (Reply::Now(SyncResponse::error(e)), Effects::default());
        if let Some(e) = self.check_member(member_id, group_instance_id) {
            return now(e);
        }
        if generation != self.generation {
            return now(code::ILLEGAL_GENERATION);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol.is_some_and(|p| Some(p) != self.protocol.as_deref())
        {
            return now(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        match self.state {
            GroupState::PreparingRebalance => now(code::REBALANCE_IN_PROGRESS),
            GroupState::Empty | GroupState::Dead => now(code::UNKNOWN_MEMBER_ID),
            GroupState::Stable => {
                let m = self.members.get_mut(member_id).expect("checked");
                m.last_heartbeat_ms = now_ms;
                (Reply::Now(self.sync_response(member_id)), fx)
            }
            GroupState::CompletingRebalance => {
                let m = self.members.get_mut(member_id).expect("checked");
                m.last_heartbeat_ms = now_ms;
                m.awaiting_sync = Some(waiter);
                if self.leader.as_deref() == Some(member_id) {
                    let given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.get(&m.member_id).cloned().unwrap_or_default();
                    }
                    self.set_state(GroupState::Stable, now_ms);
                    fx.persist_group = true;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let response = self.sync_response(&id);
                        if let Some(w) = self
                            .members
                            .get_mut(&id)
                            .and_then(|m| m.awaiting_sync.take())
                        {
                            if w == waiter {
                                continue;
                            }
                            fx.completions.push(Completion::Sync(w, response));
                        }
                    }
                    return (Reply::Now(self.sync_response(member_id)), fx);
                }
                (Reply::Later, fx)
            }
        }
    }

    fn sync_response(&self, member_id: &str) -> SyncResponse {
        SyncResponse {
            error: code::NONE,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID when `member_id` may not act in this group.
    fn check_member(&self, member_id: &str, group_instance_id: Option<&str>) -> Option<i16> {
        if let Some(instance) = group_instance_id {
            match self.static_members.get(instance) {
                Some(current) if current != member_id => return Some(code::FENCED_INSTANCE_ID),
                None if !self.members.contains_key(member_id) => {
                    return Some(code::UNKNOWN_MEMBER_ID)
                }
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Some(code::UNKNOWN_MEMBER_ID);
        }
        None
    }

    /// Handles Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> i16 {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if let Some(e) = self.check_member(member_id, group_instance_id) {
            return e;
        }
        if generation != self.generation {
            return code::ILLEGAL_GENERATION;
        }
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_heartbeat_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }

    /// Validates an OffsetCommit from a member (generation >= 0 or a member id given).
    pub fn check_commit(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> i16 {
        if generation < 0 && member_id.is_empty() {
            // A simple (non-member) commit is allowed only while no member owns the offsets.
            return if self.is_empty() {
                code::NONE
            } else {
                code::ILLEGAL_GENERATION
            };
        }
        if let Some(e) = self.check_member(member_id, group_instance_id) {
            return e;
        }
        if generation != self.generation {
            return code::ILLEGAL_GENERATION;
        }
        if self.state == GroupState::CompletingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        self.members
            .get_mut(member_id)
            .expect("checked")
            .last_heartbeat_ms = now_ms;
        code::NONE
    }

    /// Handles one member of a LeaveGroup; returns its error code.
    pub fn leave(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: i64,
        fx: &mut Effects,
    ) -> i16 {
        let member_id = match (member_id.is_empty(), group_instance_id) {
            // v3+ may name a static member by instance id only.
            (true, Some(i)) => match self.static_members.get(i) {
                Some(id) => id.clone(),
                None => return code::UNKNOWN_MEMBER_ID,
            },
            _ => member_id.to_string(),
        };
        if let Some(e) = self.check_member(&member_id, group_instance_id) {
            return e;
        }
        let m = self.remove_member(&member_id).expect("checked");
        if let Some(w) = m.awaiting_join {
            fx.completions.push(Completion::Join(
                w,
                JoinResponse::error(code::UNKNOWN_MEMBER_ID, &member_id),
            ));
        }
        if let Some(w) = m.awaiting_sync {
            fx.completions.push(Completion::Sync(
                w,
                SyncResponse::error(code::UNKNOWN_MEMBER_ID),
            ));
        }
        self.membership_shrank(now_ms, fx);
        code::NONE
    }

    fn membership_shrank(&mut self, now_ms: i64, fx: &mut Effects) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, false, fx);
                self.try_complete_join(now_ms, fx);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, fx),
            GroupState::Empty | GroupState::Dead => {}
        }
        if self.members.is_empty()
            && self.state != GroupState::Dead
            && self.state != GroupState::PreparingRebalance
        {
            self.set_state(GroupState::Empty, now_ms);
        }
    }

    /// Time passes: expire members whose session ran out, end join phases whose deadline
    /// or initial delay passed, forget unclaimed member ids.
    pub fn tick(&mut self, now_ms: i64) -> Effects {
        let mut fx = Effects::default();
        self.pending_members.retain(|_, expiry| *expiry > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.awaiting_join.is_none()
                    && now_ms - m.last_heartbeat_ms > m.session_timeout_ms as i64
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            if let Some(m) = self.remove_member(id) {
                if let Some(w) = m.awaiting_sync {
                    fx.completions.push(Completion::Sync(
                        w,
                        SyncResponse::error(code::UNKNOWN_MEMBER_ID),
                    ));
                }
            }
        }
        if !expired.is_empty() {
            self.membership_shrank(now_ms, &mut fx);
        }
        self.try_complete_join(now_ms, &mut fx);
        fx
    }

    /// The next time `tick` has work to do, if any.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.last_heartbeat_ms + m.session_timeout_ms as i64 + 1);
        let pending = self.pending_members.values().copied();
        let phase = [self.join_deadline_ms, self.initial_delay_until_ms]
            .into_iter()
            .flatten();
        sessions.chain(pending).chain(phase).min()
    }

    /// Marks the group deleted.
    pub fn mark_dead(&mut self, now_ms: i64) {
        self.set_state(GroupState::Dead, now_ms);
    }

    /// Topics the members subscribed to, when the group uses the consumer protocol and the
    /// subscriptions can be read (version 0+ ConsumerProtocolSubscription: topics first).
    pub fn subscribed_topics(&self) -> HashSet<String> {
        let mut topics = HashSet::new();
        if self.protocol_type.as_deref() != Some("consumer") {
            return topics;
        }
        let protocol = self.protocol.clone().unwrap_or_default();
        for m in self.members.values() {
            topics.extend(parse_subscription_topics(&m.metadata_for(&protocol)));
        }
        topics
    }
}

/// The caller's own JoinGroup answer, if the call that registered `waiter` already completed
/// the join phase (every member had rejoined); it is taken out of the completions.
fn take_join_reply(fx: &mut Effects, waiter: WaiterId) -> Reply<JoinResponse> {
    let mut reply = Reply::Later;
    fx.completions.retain(|c| match c {
        Completion::Join(w, r) if *w == waiter => {
            reply = Reply::Now(r.clone());
            false
        }
        _ => true,
    });
    reply
}

/// Topic names from a ConsumerProtocolSubscription (i16 version, then an array of strings).
fn parse_subscription_topics(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if data.len() < 6 {
        return out;
    }
    let count = i32::from_be_bytes([data[2], data[3], data[4], data[5]]);
    let mut pos = 6usize;
    for _ in 0..count.max(0) {
        let Some(len_bytes) = data.get(pos..pos + 2) else {
            break;
        };
        let len = i16::from_be_bytes([len_bytes[0], len_bytes[1]]);
        pos += 2;
        let Some(name) = usize::try_from(len)
            .ok()
            .and_then(|l| data.get(pos..pos + l))
        else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        pos += name.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![
                ("range".into(), Bytes::from_static(b"r")),
                ("roundrobin".into(), Bytes::from_static(b"rr")),
            ],
            require_known_member_id: true,
        }
    }

    fn limits() -> GroupLimits {
        GroupLimits::default()
    }

    /// Joins one member through MEMBER_ID_REQUIRED; returns its id.
    fn join_new(
        g: &mut Group,
        waiter: WaiterId,
        now: i64,
    ) -> (String, Reply<JoinResponse>, Effects) {
        let (r, _) = g.join(req("", None), waiter, now);
        let Reply::Now(r) = r else {
            panic!("immediate MEMBER_ID_REQUIRED")
        };
        assert_eq!(r.error, code::MEMBER_ID_REQUIRED);
        let (reply, fx) = g.join(req(&r.member_id, None), waiter, now);
        (r.member_id, reply, fx)
    }

    #[test]
    fn first_rebalance_waits_the_initial_delay_then_completes() {
        let mut g = Group::new("g", 0, limits());
        let (a, reply, _) = join_new(&mut g, 1, 0);
        assert_eq!(reply, Reply::Later);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let (b, reply, _) = join_new(&mut g, 2, 1_000);
        assert_eq!(reply, Reply::Later);
        assert!(
            g.tick(3_500).completions.is_empty(),
            "the delay was extended by the second member"
        );
        let fx = g.tick(4_000);
        assert_eq!(fx.completions.len(), 2);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.generation, 1);
        assert_eq!(g.protocol.as_deref(), Some("range"));
        let leader = g.leader.clone().unwrap();
        for c in fx.completions {
            let Completion::Join(_, r) = c else { panic!() };
            assert_eq!(r.members.len(), if r.member_id == leader { 2 } else { 0 });
        }
        // Leader syncs with the assignment; the follower's waiting sync completes.
        let follower = if leader == a { b.clone() } else { a.clone() };
        let (r, _) = g.sync(&follower, None, 1, None, None, vec![], 10, 4_100);
        assert_eq!(r, Reply::Later);
        let assignments = vec![
            (a.clone(), Bytes::from_static(b"A")),
            (b.clone(), Bytes::from_static(b"B")),
        ];
        let (r, fx) = g.sync(
            &leader,
            None,
            1,
            Some("consumer"),
            Some("range"),
            assignments,
            11,
            4_200,
        );
        let Reply::Now(r) = r else { panic!() };
        assert_eq!(r.assignment, if leader == a { "A" } else { "B" });
        assert!(fx.persist_group);
        assert_eq!(fx.completions.len(), 1);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&a, None, 1, 5_000), code::NONE);
        assert_eq!(g.heartbeat(&a, None, 0, 5_000), code::ILLEGAL_GENERATION);
        assert_eq!(
            g.heartbeat("nobody", None, 1, 5_000),
            code::UNKNOWN_MEMBER_ID
        );
    }

    #[test]
    fn session_timeout_evicts_and_rebalances() {
        let mut g = Group::new("g", 0, limits());
        let (a, _, _) = join_new(&mut g, 1, 0);
        let (b, _, _) = join_new(&mut g, 2, 0);
        g.tick(3_000);
        let leader = g.leader.clone().unwrap();
        g.sync(&leader, None, 1, None, None, vec![], 3, 3_000);
        assert_eq!(g.state, GroupState::Stable);
        // Only `a` keeps heartbeating.
        for t in (4_000..=14_000).step_by(1_000) {
            g.heartbeat(&a, None, 1, t);
        }
        g.tick(14_000);
        assert!(!g.members.contains_key(&b), "b's session expired");
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat(&a, None, 1, 14_100),
            code::REBALANCE_IN_PROGRESS
        );
        let (reply, _) = g.join(req(&a, None), 9, 14_200);
        let Reply::Now(r) = reply else {
            panic!("sole member rejoined: completes at once")
        };
        assert_eq!((r.generation, r.leader.as_str()), (2, a.as_str()));
    }

    #[test]
    fn leave_and_errors() {
        let mut g = Group::new("g", 0, limits());
        let (r, _) = g.join(
            JoinRequest {
                session_timeout_ms: 10,
                ..req("", None)
            },
            1,
            0,
        );
        assert_eq!(
            r,
            Reply::Now(JoinResponse::error(code::INVALID_SESSION_TIMEOUT, ""))
        );
        let (r, _) = g.join(req("stranger", None), 1, 0);
        assert!(matches!(
            r,
            Reply::Now(JoinResponse {
                error: code::UNKNOWN_MEMBER_ID,
                ..
            })
        ));
        let (a, _, _) = join_new(&mut g, 1, 0);
        let (r, _) = g.join(
            JoinRequest {
                protocol_type: "other".into(),
                ..req("", None)
            },
            2,
            0,
        );
        assert!(matches!(
            r,
            Reply::Now(JoinResponse {
                error: code::INCONSISTENT_GROUP_PROTOCOL,
                ..
            })
        ));
        let mut fx = Effects::default();
        assert_eq!(g.leave(&a, None, 10, &mut fx), code::NONE);
        assert_eq!(fx.completions.len(), 1, "its pending join is answered");
        assert_eq!(g.leave(&a, None, 10, &mut fx), code::UNKNOWN_MEMBER_ID);
        g.tick(5_000);
        assert_eq!(g.state, GroupState::Empty);
        let mut g = Group::new(
            "small",
            0,
            GroupLimits {
                max_size: 1,
                ..limits()
            },
        );
        let (r, _) = g.join(req("", None), 1, 6_000);
        let Reply::Now(r) = r else { panic!() };
        g.join(req(&r.member_id, None), 1, 6_000);
        let (r, _) = g.join(req("", None), 2, 6_000);
        assert!(matches!(
            r,
            Reply::Now(JoinResponse {
                error: code::GROUP_MAX_SIZE_REACHED,
                ..
            })
        ));
    }

    #[test]
    fn static_member_rejoins_without_rebalance_and_fences_the_old_id() {
        let mut g = Group::new("g", 0, limits());
        let (r, _) = g.join(req("", Some("i1")), 1, 0);
        assert_eq!(
            r,
            Reply::Later,
            "static members need no MEMBER_ID_REQUIRED round"
        );
        let fx = g.tick(3_000);
        let Completion::Join(_, jr) = &fx.completions[0] else {
            panic!()
        };
        let old_id = jr.member_id.clone();
        g.sync(
            &old_id,
            Some("i1"),
            1,
            None,
            None,
            vec![(old_id.clone(), Bytes::from_static(b"X"))],
            2,
            3_000,
        );
        assert_eq!(g.state, GroupState::Stable);
        let (r, _) = g.join(req("", Some("i1")), 3, 4_000);
        let Reply::Now(r) = r else {
            panic!("no rebalance")
        };
        assert_eq!(r.generation, 1);
        assert_ne!(r.member_id, old_id);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(
            g.heartbeat(&old_id, Some("i1"), 1, 4_100),
            code::FENCED_INSTANCE_ID
        );
        let (s, _) = g.sync(&r.member_id, Some("i1"), 1, None, None, vec![], 4, 4_200);
        assert_eq!(
            s,
            Reply::Now(SyncResponse {
                error: 0,
                protocol_type: Some("consumer".into()),
                protocol: Some("range".into()),
                assignment: Bytes::from_static(b"X")
            })
        );
    }

    #[test]
    fn simple_commits_only_for_empty_groups() {
        let mut g = Group::new("g", 0, limits());
        assert_eq!(g.check_commit("", None, -1, 0), code::NONE);
        join_new(&mut g, 1, 0);
        assert_eq!(g.check_commit("", None, -1, 0), code::ILLEGAL_GENERATION);
    }

    #[test]
    fn subscription_topics_parse() {
        let mut data = vec![0, 1, 0, 0, 0, 2];
        for t in ["ab", "c"] {
            data.extend_from_slice(&(t.len() as i16).to_be_bytes());
            data.extend_from_slice(t.as_bytes());
        }
        assert_eq!(parse_subscription_topics(&data), vec!["ab", "c"]);
        assert!(parse_subscription_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]).is_empty());
    }
}
