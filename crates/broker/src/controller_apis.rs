//! The Kafka requests a broker sends to the active controller, as in KRaft:
//! BrokerRegistration (API key 62, v0-4), BrokerHeartbeat (63, v0-1), AlterPartition (56,
//! v2-3: a partition leader's ISR change) and AllocateProducerIds (67, v0: a block of
//! producer ids). A broker builds them with Kafka's own encoding ([`registration_frame`],
//! [`heartbeat_frame`], [`alter_partition_frame`], [`allocate_producer_ids_frame`]) and sends them to
//! the controller over the quorum's connections (the CONTROLLER listener); the controller
//! checks the frame with the protocol guard, decodes it, runs it through its `Controller`
//! ([`serve`]) and answers with Kafka's response and error codes. Clients are never served
//! these APIs (they are not in ApiVersions).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gregor_metadata::controller::{
    AlterPartition, AlterPartitionItem, AlterPartitionResult, BrokerHeartbeat, BrokerRegistration,
    HeartbeatReply, LeaderAndIsr,
};
use gregor_metadata::{Controller, ControllerError};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::{
    alter_partition_request, alter_partition_response, AllocateProducerIdsRequest,
    AllocateProducerIdsResponse, AlterPartitionRequest, AlterPartitionResponse, ApiKey,
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerId, BrokerRegistrationRequest,
    BrokerRegistrationResponse, ProducerId, RequestHeader, RequestKind, ResponseHeader,
    ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::dispatch::encode_response;
use crate::handlers::wire::{code, controller_error, NONE};
use crate::timed_controller::TimedController;

/// The versions this broker sends.
const REGISTRATION_VERSION: i16 = 4;
const HEARTBEAT_VERSION: i16 = 1;
/// AlterPartition v3: the new ISR carries each member's broker epoch (KIP-903).
const ALTER_PARTITION_VERSION: i16 = 3;
const ALLOCATE_PRODUCER_IDS_VERSION: i16 = 0;
/// How many producer ids one AllocateProducerIds hands out (Kafka's block size).
pub const PRODUCER_ID_BLOCK: i32 = 1000;

/// What a broker registers.
pub struct Registration<'a> {
    pub node_id: i32,
    pub cluster_id: &'a str,
    pub incarnation_id: uuid::Uuid,
    pub host: &'a str,
    pub port: u16,
    pub rack: Option<&'a str>,
    /// The epoch this node's previous process shut down cleanly with, else -1.
    pub previous_broker_epoch: i64,
}

/// A BrokerRegistration request frame (no length prefix).
pub fn registration_frame(r: &Registration<'_>) -> Vec<u8> {
    let listener = Listener::default()
        .with_name(StrBytes::from_static_str("PLAINTEXT"))
        .with_host(StrBytes::from_string(r.host.to_string()))
        .with_port(r.port)
        .with_security_protocol(0);
    let request = BrokerRegistrationRequest::default()
        .with_broker_id(BrokerId(r.node_id))
        .with_cluster_id(StrBytes::from_string(r.cluster_id.to_string()))
        .with_incarnation_id(r.incarnation_id)
        .with_listeners(vec![listener])
        .with_rack(r.rack.map(|s| StrBytes::from_string(s.to_string())))
        .with_previous_broker_epoch(r.previous_broker_epoch);
    request_frame(ApiKey::BrokerRegistration, REGISTRATION_VERSION, |buf| {
        request
            .encode(buf, REGISTRATION_VERSION)
            .expect("a registration encodes")
    })
}

/// A BrokerHeartbeat request frame (no length prefix).
pub fn heartbeat_frame(hb: &BrokerHeartbeat) -> Vec<u8> {
    let request = BrokerHeartbeatRequest::default()
        .with_broker_id(BrokerId(hb.node_id))
        .with_broker_epoch(hb.broker_epoch)
        .with_current_metadata_offset(hb.metadata_offset)
        .with_want_shut_down(hb.want_shut_down);
    request_frame(ApiKey::BrokerHeartbeat, HEARTBEAT_VERSION, |buf| {
        request
            .encode(buf, HEARTBEAT_VERSION)
            .expect("a heartbeat encodes")
    })
}

/// An AlterPartition request frame (no length prefix), v3: each ISR member with its broker
/// epoch. Consecutive items of one topic share its topic entry.
pub fn alter_partition_frame(request: &AlterPartition) -> Vec<u8> {
    let mut topics: Vec<alter_partition_request::TopicData> = Vec::new();
    for item in &request.partitions {
        let partition = alter_partition_request::PartitionData::default()
            .with_partition_index(item.partition)
            .with_leader_epoch(item.leader_epoch)
            .with_partition_epoch(item.partition_epoch)
            .with_leader_recovery_state(0)
            .with_new_isr_with_epochs(
                item.new_isr
                    .iter()
                    .map(|(id, epoch)| {
                        alter_partition_request::BrokerState::default()
                            .with_broker_id(BrokerId(*id))
                            .with_broker_epoch(*epoch)
                    })
                    .collect(),
            );
        match topics.last_mut() {
            Some(t) if t.topic_id == item.topic_id => t.partitions.push(partition),
            _ => topics.push(
                alter_partition_request::TopicData::default()
                    .with_topic_id(item.topic_id)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let body = AlterPartitionRequest::default()
        .with_broker_id(BrokerId(request.broker_id))
        .with_broker_epoch(request.broker_epoch)
        .with_topics(topics);
    request_frame(ApiKey::AlterPartition, ALTER_PARTITION_VERSION, |buf| {
        body.encode(buf, ALTER_PARTITION_VERSION)
            .expect("an AlterPartition request encodes")
    })
}

/// An AllocateProducerIds request frame of broker `broker_id` at `broker_epoch`.
pub fn allocate_producer_ids_frame(broker_id: i32, broker_epoch: i64) -> Vec<u8> {
    let request = AllocateProducerIdsRequest::default()
        .with_broker_id(BrokerId(broker_id))
        .with_broker_epoch(broker_epoch);
    request_frame(
        ApiKey::AllocateProducerIds,
        ALLOCATE_PRODUCER_IDS_VERSION,
        |buf| {
            request
                .encode(buf, ALLOCATE_PRODUCER_IDS_VERSION)
                .expect("an AllocateProducerIds request encodes")
        },
    )
}

/// The block (first id, length) of an AllocateProducerIds response frame, or the
/// controller's refusal.
pub fn allocate_producer_ids_reply(frame: &[u8]) -> Result<(i64, i32), ControllerError> {
    let response: AllocateProducerIdsResponse = decode_response(
        frame,
        ApiKey::AllocateProducerIds,
        ALLOCATE_PRODUCER_IDS_VERSION,
    )?;
    refusal(response.error_code, "AllocateProducerIds")?;
    if response.producer_id_len <= 0 || response.producer_id_start.0 < 0 {
        return Err(ControllerError::Internal(format!(
            "AllocateProducerIds answered an empty block ({}, {})",
            response.producer_id_start.0, response.producer_id_len
        )));
    }
    Ok((response.producer_id_start.0, response.producer_id_len))
}

/// A request frame (header and body, no length prefix) this broker sends as a client.
pub(crate) fn request_frame(
    key: ApiKey,
    version: i16,
    body: impl FnOnce(&mut BytesMut),
) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_client_id(Some(StrBytes::from_static_str("gregor-broker")));
    let mut buf = BytesMut::with_capacity(256);
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("a request header encodes");
    body(&mut buf);
    buf.to_vec()
}

/// The broker epoch of a BrokerRegistration response frame, or the controller's refusal.
pub fn registration_reply(frame: &[u8]) -> Result<i64, ControllerError> {
    let response: BrokerRegistrationResponse =
        decode_response(frame, ApiKey::BrokerRegistration, REGISTRATION_VERSION)?;
    refusal(response.error_code, "BrokerRegistration")?;
    Ok(response.broker_epoch)
}

/// The controller's answer in a BrokerHeartbeat response frame.
pub fn heartbeat_reply(frame: &[u8]) -> Result<HeartbeatReply, ControllerError> {
    let response: BrokerHeartbeatResponse =
        decode_response(frame, ApiKey::BrokerHeartbeat, HEARTBEAT_VERSION)?;
    refusal(response.error_code, "BrokerHeartbeat")?;
    Ok(HeartbeatReply {
        caught_up: response.is_caught_up,
        fenced: response.is_fenced,
    })
}

/// The controller's answer per partition in an AlterPartition response frame (in the order
/// of the response), or its refusal of the whole request (STALE_BROKER_EPOCH,
/// NOT_CONTROLLER, ...).
pub fn alter_partition_reply(frame: &[u8]) -> Result<Vec<AlterPartitionResult>, ControllerError> {
    let response: AlterPartitionResponse =
        decode_response(frame, ApiKey::AlterPartition, ALTER_PARTITION_VERSION)?;
    refusal(response.error_code, "AlterPartition")?;
    Ok(response
        .topics
        .into_iter()
        .flat_map(|t| {
            let topic_id = t.topic_id;
            t.partitions.into_iter().map(move |p| AlterPartitionResult {
                topic_id,
                partition: p.partition_index,
                outcome: refusal(p.error_code, "AlterPartition").map(|()| LeaderAndIsr {
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr: p.isr.iter().map(|b| b.0).collect(),
                }),
            })
        })
        .collect())
}

fn decode_response<T: Decodable>(
    frame: &[u8],
    key: ApiKey,
    version: i16,
) -> Result<T, ControllerError> {
    let malformed =
        |e: String| ControllerError::Internal(format!("malformed {key:?} response: {e}"));
    // Length prefix, then the header and body.
    let mut buf = Bytes::copy_from_slice(frame.get(4..).ok_or_else(|| malformed("short".into()))?);
    ResponseHeader::decode(&mut buf, key.response_header_version(version))
        .map_err(|e| malformed(e.to_string()))?;
    T::decode(&mut buf, version).map_err(|e| malformed(e.to_string()))
}

/// A non-zero error code as the controller error it stands for.
fn refusal(error_code: i16, what: &str) -> Result<(), ControllerError> {
    if error_code == NONE {
        return Ok(());
    }
    let error = ResponseError::try_from_code(error_code);
    let message = match error {
        Some(e) => format!("{what} refused by the active controller: {e:?} ({e})"),
        None => format!("{what} refused by the active controller: error code {error_code}"),
    };
    Err(match error {
        Some(ResponseError::NotController) => ControllerError::NotController(message),
        Some(ResponseError::RequestTimedOut) => ControllerError::Timeout(message),
        Some(ResponseError::DuplicateBrokerRegistration) => {
            ControllerError::DuplicateBrokerRegistration(message)
        }
        Some(ResponseError::StaleBrokerEpoch) => ControllerError::StaleBrokerEpoch(message),
        Some(ResponseError::UnknownTopicId) => ControllerError::UnknownTopicId(message),
        Some(ResponseError::UnknownTopicOrPartition) => ControllerError::UnknownTopic(message),
        Some(ResponseError::FencedLeaderEpoch) => ControllerError::FencedLeaderEpoch(message),
        Some(ResponseError::InvalidRequest) => ControllerError::InvalidRequest(message),
        Some(ResponseError::InvalidUpdateVersion) => ControllerError::InvalidUpdateVersion(message),
        Some(ResponseError::IneligibleReplica) => ControllerError::IneligibleReplica(message),
        Some(ResponseError::InconsistentClusterId) => ControllerError::Internal(
            "INCONSISTENT_CLUSTER_ID: the active controller belongs to another cluster".into(),
        ),
        _ => ControllerError::Internal(message),
    })
}

/// On the active controller: answers one BrokerRegistration, BrokerHeartbeat,
/// AlterPartition or AllocateProducerIds request frame with its response frame. A frame the guard or the codec refuses is an `Err`
/// (the connection it came on is closed).
pub fn serve(controller: &TimedController, frame: Vec<u8>) -> Result<Vec<u8>, String> {
    if frame.len() < 8 {
        return Err("a controller request shorter than its header".into());
    }
    // Bounded like client requests: an AlterPartition for thousands of partitions (a broker
    // rejoining every ISR after a restart) needs more than a fixed megabyte.
    let cap = crate::dispatch::decode_memory_cap(frame.len());
    gregor_protocol::guard::check_controller_request(&frame, cap)
        .map_err(|e| format!("controller request refused: {e}"))?;
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(key).map_err(|_| format!("unknown api key {key}"))?;
    let mut body = Bytes::from(frame);
    let header = RequestHeader::decode(&mut body, key.request_header_version(version))
        .map_err(|e| format!("undecodable request header: {e}"))?;
    let request = RequestKind::decode(key, &mut body, version)
        .map_err(|e| format!("undecodable {key:?} v{version}: {e}"))?;
    let mut controller = controller.lock();
    let response = match request {
        RequestKind::BrokerRegistration(r) => {
            ResponseKind::BrokerRegistration(register(&mut controller, r))
        }
        RequestKind::BrokerHeartbeat(r) => {
            ResponseKind::BrokerHeartbeat(heartbeat(&mut controller, r))
        }
        RequestKind::AlterPartition(r) => {
            ResponseKind::AlterPartition(alter_partition(&mut controller, r, version))
        }
        RequestKind::AllocateProducerIds(r) => {
            ResponseKind::AllocateProducerIds(allocate_producer_ids(&mut controller, r))
        }
        _ => unreachable!("the guard admits only the controller requests"),
    };
    encode_response(key, version, header.correlation_id, &response).map(|b| b.to_vec())
}

fn register(
    controller: &mut Controller,
    r: BrokerRegistrationRequest,
) -> BrokerRegistrationResponse {
    let response = BrokerRegistrationResponse::default().with_broker_epoch(-1);
    let cluster_id = controller.image().cluster_id.clone();
    if cluster_id.as_deref() != Some(r.cluster_id.as_str()) {
        tracing::error!(
            broker = r.broker_id.0,
            theirs = %r.cluster_id.as_str(),
            ours = ?cluster_id,
            "INCONSISTENT_CLUSTER_ID: a broker of another cluster asked to register"
        );
        return response.with_error_code(code(ResponseError::InconsistentClusterId));
    }
    let Some(listener) = r.listeners.first() else {
        return response.with_error_code(code(ResponseError::InvalidRequest));
    };
    let registration = BrokerRegistration {
        node_id: r.broker_id.0,
        incarnation_id: r.incarnation_id,
        host: listener.host.as_str(),
        port: listener.port,
        rack: r.rack.as_ref().map(|s| s.as_str()),
        previous_broker_epoch: r.previous_broker_epoch,
    };
    match controller.register_broker(registration, Instant::now()) {
        Ok(epoch) => response.with_error_code(NONE).with_broker_epoch(epoch),
        Err(e) => {
            let (c, message) = controller_error(&e);
            tracing::info!(broker = r.broker_id.0, error = %message, "registration refused");
            response.with_error_code(c)
        }
    }
}

fn heartbeat(controller: &mut Controller, r: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
    let hb = BrokerHeartbeat {
        node_id: r.broker_id.0,
        broker_epoch: r.broker_epoch,
        metadata_offset: r.current_metadata_offset,
        want_shut_down: r.want_shut_down || r.want_fence,
    };
    match controller.broker_heartbeat(hb, Instant::now()) {
        Ok(reply) => BrokerHeartbeatResponse::default()
            .with_error_code(NONE)
            .with_is_caught_up(reply.caught_up)
            .with_is_fenced(reply.fenced)
            .with_should_shut_down(r.want_shut_down && reply.fenced),
        Err(e) => BrokerHeartbeatResponse::default()
            .with_error_code(controller_error(&e).0)
            .with_is_fenced(true),
    }
}

/// A block of producer ids for a registered broker of the current epoch (else
/// STALE_BROKER_EPOCH), never handed out before: the block is in the metadata log before the
/// answer.
fn allocate_producer_ids(
    controller: &mut Controller,
    r: AllocateProducerIdsRequest,
) -> AllocateProducerIdsResponse {
    let current = controller
        .image()
        .brokers
        .get(&r.broker_id.0)
        .is_some_and(|b| b.epoch == r.broker_epoch);
    if !current {
        return AllocateProducerIdsResponse::default()
            .with_error_code(code(ResponseError::StaleBrokerEpoch))
            .with_producer_id_start(ProducerId(-1));
    }
    match controller.allocate_producer_ids(i64::from(PRODUCER_ID_BLOCK)) {
        Ok(start) => AllocateProducerIdsResponse::default()
            .with_error_code(NONE)
            .with_producer_id_start(ProducerId(start))
            .with_producer_id_len(PRODUCER_ID_BLOCK),
        Err(e) => AllocateProducerIdsResponse::default()
            .with_error_code(controller_error(&e).0)
            .with_producer_id_start(ProducerId(-1)),
    }
}

fn alter_partition(
    controller: &mut Controller,
    r: AlterPartitionRequest,
    version: i16,
) -> AlterPartitionResponse {
    let items = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| AlterPartitionItem {
                topic_id: t.topic_id,
                partition: p.partition_index,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                // v2 names the members only: their broker epochs are not checked.
                new_isr: if version >= 3 {
                    p.new_isr_with_epochs
                        .iter()
                        .map(|b| (b.broker_id.0, b.broker_epoch))
                        .collect()
                } else {
                    p.new_isr.iter().map(|b| (b.0, -1)).collect()
                },
            })
        })
        .collect();
    let request = AlterPartition {
        broker_id: r.broker_id.0,
        broker_epoch: r.broker_epoch,
        partitions: items,
    };
    let results = match controller.alter_partition(request) {
        Ok(results) => results,
        Err(e) => {
            let (c, message) = controller_error(&e);
            tracing::info!(broker = r.broker_id.0, error = %message, "AlterPartition refused");
            return AlterPartitionResponse::default().with_error_code(c);
        }
    };
    // The results come in the order of the request's partitions.
    let mut results = results.into_iter();
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .zip(results.by_ref())
                .map(|(_, result)| {
                    let p = alter_partition_response::PartitionData::default()
                        .with_partition_index(result.partition);
                    match result.outcome {
                        Ok(state) => p
                            .with_error_code(NONE)
                            .with_leader_id(BrokerId(state.leader))
                            .with_leader_epoch(state.leader_epoch)
                            .with_partition_epoch(state.partition_epoch)
                            .with_isr(state.isr.into_iter().map(BrokerId).collect()),
                        Err(e) => {
                            let (c, message) = controller_error(&e);
                            tracing::debug!(broker = r.broker_id.0, error = %message, "AlterPartition of a partition refused");
                            p.with_error_code(c)
                                .with_leader_id(BrokerId(-1))
                                .with_leader_epoch(-1)
                                .with_partition_epoch(-1)
                        }
                    }
                })
                .collect();
            alter_partition_response::TopicData::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionResponse::default()
        .with_error_code(NONE)
        .with_topics(topics)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use gregor_metadata::controller::MetadataWriter;
    use gregor_metadata::{MetadataBatch, MetadataImage, MetadataRecord};

    use super::*;

    /// Commits at once, in memory.
    struct Memory(Arc<MetadataImage>);

    impl MetadataWriter for Memory {
        fn image(&self) -> Arc<MetadataImage> {
            self.0.clone()
        }
        fn write(&mut self, records: Vec<MetadataRecord>) -> Result<i64, ControllerError> {
            let batch = MetadataBatch {
                base_offset: self.0.next_offset(),
                epoch: 1,
                records,
            };
            let (next, _) = self
                .0
                .apply_batch(&batch)
                .map_err(|e| ControllerError::Internal(e.to_string()))?;
            self.0 = Arc::new(next);
            Ok(batch.last_offset())
        }
        fn term(&self) -> u64 {
            1
        }
    }

    fn controller() -> TimedController {
        let mut c = Controller::new(
            Box::new(Memory(Arc::new(MetadataImage::default()))),
            Duration::from_secs(9),
            Default::default(),
        );
        c.claim_cluster_id("the-cluster".into()).unwrap();
        TimedController::new(c, Default::default())
    }

    fn registration(cluster_id: &str) -> Vec<u8> {
        registration_frame(&Registration {
            node_id: 3,
            cluster_id,
            incarnation_id: uuid::Uuid::new_v4(),
            host: "127.0.0.1",
            port: 9092,
            rack: Some("r1"),
            previous_broker_epoch: -1,
        })
    }

    #[test]
    fn a_broker_registers_and_heartbeats_itself_unfenced_in_kafka_frames() {
        let c = controller();
        let epoch = registration_reply(&serve(&c, registration("the-cluster")).unwrap()).unwrap();
        let broker = c.lock().image().brokers[&3].clone();
        assert_eq!((broker.epoch, broker.fenced), (epoch, true));
        assert_eq!(broker.rack.as_deref(), Some("r1"));
        let hb = |offset| {
            heartbeat_frame(&BrokerHeartbeat {
                node_id: 3,
                broker_epoch: epoch,
                metadata_offset: offset,
                want_shut_down: false,
            })
        };
        let reply = heartbeat_reply(&serve(&c, hb(epoch)).unwrap()).unwrap();
        assert_eq!(
            reply,
            HeartbeatReply {
                caught_up: true,
                fenced: false
            }
        );
        let stale = heartbeat_frame(&BrokerHeartbeat {
            node_id: 3,
            broker_epoch: epoch + 7,
            metadata_offset: epoch,
            want_shut_down: false,
        });
        assert!(matches!(
            heartbeat_reply(&serve(&c, stale).unwrap()),
            Err(ControllerError::StaleBrokerEpoch(_))
        ));
    }

    #[test]
    fn producer_id_blocks_go_to_registered_brokers_and_never_repeat() {
        let c = controller();
        let epoch = registration_reply(&serve(&c, registration("the-cluster")).unwrap()).unwrap();
        let block = || {
            allocate_producer_ids_reply(&serve(&c, allocate_producer_ids_frame(3, epoch)).unwrap())
        };
        let (a, len) = block().unwrap();
        let (b, _) = block().unwrap();
        assert_eq!(len, PRODUCER_ID_BLOCK);
        assert_eq!(b, a + i64::from(len), "the next block follows, no id twice");
        assert_eq!(c.lock().image().next_producer_id, b + i64::from(len));
        for (broker, broker_epoch) in [(3, epoch + 1), (9, epoch)] {
            let refused = serve(&c, allocate_producer_ids_frame(broker, broker_epoch)).unwrap();
            assert!(matches!(
                allocate_producer_ids_reply(&refused),
                Err(ControllerError::StaleBrokerEpoch(_))
            ));
        }
    }

    #[test]
    fn another_cluster_and_hostile_frames_are_refused() {
        let c = controller();
        let refused = registration_reply(&serve(&c, registration("other")).unwrap());
        assert!(
            matches!(&refused, Err(ControllerError::Internal(m)) if m.contains("INCONSISTENT_CLUSTER_ID")),
            "{refused:?}"
        );
        assert!(c.lock().image().brokers.is_empty());
        // Truncated, and a listener count far beyond the bytes: refused, nothing allocated.
        let frame = registration("the-cluster");
        assert!(serve(&c, frame[..frame.len() - 3].to_vec()).is_err());
        let header_len = frame.len() - {
            let mut body = BytesMut::new();
            BrokerRegistrationRequest::default()
                .with_cluster_id(StrBytes::from_static_str("the-cluster"))
                .with_listeners(vec![Listener::default()
                    .with_name(StrBytes::from_static_str("PLAINTEXT"))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(9092)])
                .with_rack(Some(StrBytes::from_static_str("r1")))
                .encode(&mut body, REGISTRATION_VERSION)
                .unwrap();
            body.len()
        };
        let mut hostile = frame.clone();
        // broker id (4), cluster id (1 + 11), incarnation id (16): then the listener count.
        let count_at = header_len + 4 + 12 + 16;
        hostile[count_at] = 0xff;
        hostile.splice(count_at + 1..count_at + 1, [0xff, 0xff, 0xff, 0x07]);
        assert!(serve(&c, hostile).is_err());
        assert!(
            serve(&c, vec![0, 62, 0, 4]).is_err(),
            "shorter than a header"
        );
        // A client API is not served here.
        let mut metadata = frame;
        metadata[1] = 3;
        assert!(serve(&c, metadata).is_err());
    }

    /// Three live brokers and a topic of one partition replicated on all three; the
    /// partition's state.
    fn controller_with_partition() -> (TimedController, gregor_metadata::PartitionImage) {
        let c = controller();
        {
            let mut c = c.lock();
            for id in 1..=3 {
                let reg = gregor_metadata::controller::BrokerRegistration {
                    node_id: id,
                    incarnation_id: uuid::Uuid::new_v4(),
                    host: "127.0.0.1",
                    port: 9092,
                    rack: None,
                    previous_broker_epoch: -1,
                };
                let epoch = c.register_broker(reg, Instant::now()).unwrap();
                let offset = c.image().offset;
                c.broker_heartbeat(
                    BrokerHeartbeat {
                        node_id: id,
                        broker_epoch: epoch,
                        metadata_offset: offset,
                        want_shut_down: false,
                    },
                    Instant::now(),
                )
                .unwrap();
            }
            c.create_topic(
                gregor_metadata::controller::NewTopic {
                    name: "t",
                    num_partitions: 2,
                    replication_factor: 3,
                    configs: &[],
                    assignment: &[],
                },
                false,
            )
            .unwrap();
        }
        let p = c.lock().image().topic("t").unwrap().partitions[&0].clone();
        (c, p)
    }

    fn shrink(c: &TimedController, p: &gregor_metadata::PartitionImage) -> AlterPartition {
        let image = c.lock().image();
        let topic_id = image.topic("t").unwrap().topic_id;
        let epoch = |id: i32| image.brokers[&id].epoch;
        let item = AlterPartitionItem {
            topic_id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: vec![
                (p.leader, epoch(p.leader)),
                (p.replicas[1], epoch(p.replicas[1])),
            ],
        };
        AlterPartition {
            broker_id: p.leader,
            broker_epoch: epoch(p.leader),
            // The same partition again at the old partition epoch: refused on its own.
            partitions: vec![item.clone(), item],
        }
    }

    #[test]
    fn a_leader_shrinks_the_isr_in_kafka_frames() {
        let (c, p) = controller_with_partition();
        let request = shrink(&c, &p);
        let results =
            alter_partition_reply(&serve(&c, alter_partition_frame(&request)).unwrap()).unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].partition, 0);
        assert_eq!(
            results[0].outcome.as_ref().unwrap(),
            &LeaderAndIsr {
                leader: p.leader,
                leader_epoch: 0,
                partition_epoch: 1,
                isr: vec![p.leader, p.replicas[1]],
            }
        );
        assert!(
            matches!(
                &results[1].outcome,
                Err(ControllerError::InvalidUpdateVersion(_))
            ),
            "{:?}",
            results[1].outcome
        );
        let now = c.lock().image().topic("t").unwrap().partitions[&0].clone();
        assert_eq!(
            (now.isr, now.partition_epoch),
            (vec![p.leader, p.replicas[1]], 1)
        );
        // A leader naming another broker epoch is refused as a whole.
        let mut stale = request;
        stale.broker_epoch += 50;
        assert!(matches!(
            alter_partition_reply(&serve(&c, alter_partition_frame(&stale)).unwrap()),
            Err(ControllerError::StaleBrokerEpoch(_))
        ));
    }

    #[test]
    fn a_hostile_alter_partition_frame_is_refused() {
        let (c, p) = controller_with_partition();
        let frame = alter_partition_frame(&shrink(&c, &p));
        assert!(serve(&c, frame[..frame.len() - 1].to_vec()).is_err());
        // The topics count (a compact varint right after broker id and epoch) made huge.
        let body_len = {
            let mut body = BytesMut::new();
            AlterPartitionRequest::default()
                .encode(&mut body, ALTER_PARTITION_VERSION)
                .unwrap();
            body.len()
        };
        let header_len =
            request_frame(ApiKey::AlterPartition, ALTER_PARTITION_VERSION, |_| {}).len();
        assert_eq!(body_len, 4 + 8 + 1 + 1, "broker id, epoch, topics, tags");
        let count_at = header_len + 12;
        let mut hostile = frame.clone();
        hostile.splice(count_at..count_at + 1, [0xff, 0xff, 0xff, 0xff, 0x07]);
        let refused = serve(&c, hostile).unwrap_err();
        assert!(refused.contains("topics"), "{refused}");
        assert_eq!(
            c.lock().image().topic("t").unwrap().partitions[&0].partition_epoch,
            0,
            "nothing was changed"
        );
        // v1 is not decoded.
        let mut v1 = frame;
        v1[3] = 1;
        assert!(serve(&c, v1).is_err());
    }
}
