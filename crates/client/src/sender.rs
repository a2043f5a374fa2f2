//! The sender task: obtains a producer id, keeps metadata fresh, drains ready batches per
//! leader into Produce requests and handles the responses (success, retry, failure). For a
//! transactional producer it adds partitions to the transaction (AddPartitionsToTxn) before
//! their first batch and fails the queued batches of a transaction that cannot send them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestKind, ResponseKind, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::accumulator::{Batch, ProducerIdentity, Tp};
use crate::error::{Error, Result};
use crate::metadata::is_metadata_error;
use crate::producer::shared::Inner;
use crate::producer::txn_requests;

/// Longest idle sleep; the loop also wakes on every notification.
const IDLE: Duration = Duration::from_millis(500);

/// How long a broker with Produce requests outstanding may answer nothing before the sender
/// asks another broker whether their partitions still have it as leader. A broker that was
/// paused or hung keeps its connections open, so without this the producer would notice
/// the failover only after `request.timeout.ms` (30 s by default).
const SILENCE_CHECK: Duration = Duration::from_secs(1);
/// How often the sender asks again while the silence lasts: the new leader is known within
/// this of the controller's election.
const SILENCE_RECHECK: Duration = Duration::from_millis(250);

pub(crate) async fn run(inner: Arc<Inner>) {
    let mut last_metadata_attempt: Option<Instant> = None;
    let mut last_pid_attempt: Option<Instant> = None;
    let mut last_silence_check: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let backoff = inner.config.retry_backoff;

        // Exit once shut down and everything accepted is resolved.
        {
            let st = inner.state.lock().unwrap();
            if st.shutdown && st.unacked == 0 && st.in_flight.total() == 0 {
                return;
            }
        }

        expire(&inner, now);

        // Idempotence: obtain (or renew) the producer id when nothing is in flight. A
        // transactional producer gets it from `init_transactions` and renews it on
        // transaction boundaries.
        let need_pid = {
            let st = inner.state.lock().unwrap();
            let idem = &st.idempotence;
            idem.enabled
                && st.txn.is_none()
                && (idem.identity.is_none() || idem.needs_reset)
                && st.in_flight.total() == 0
                && st.unacked > 0
        };
        if need_pid && last_pid_attempt.is_none_or(|t| now.duration_since(t) >= backoff) {
            last_pid_attempt = Some(now);
            match init_producer_id(&inner).await {
                Ok(identity) => {
                    tracing::debug!(?identity, "obtained producer id");
                    let mut st = inner.state.lock().unwrap();
                    st.idempotence.install(identity);
                    st.clear_sequences();
                }
                Err(e) => tracing::warn!("InitProducerId failed: {e}"),
            }
            continue;
        }

        // Transactions: partitions join the transaction before their first batch is sent.
        let mut add_retry_at = None;
        if inner.config.transactional_id.is_some() {
            inner.fail_queued_batches();
            let adds = {
                let mut st = inner.state.lock().unwrap();
                let identity = st.idempotence.identity;
                let txn = st.txn.as_mut().expect("transactional producer");
                add_retry_at = txn.add_retry_at();
                identity.map(|id| (id, txn.take_partitions_to_add(now)))
            };
            if let Some((identity, tps)) = adds.filter(|(_, tps)| !tps.is_empty()) {
                inner.add_partitions(identity, tps).await;
                continue;
            }
        }

        // Metadata: refresh when asked to, or when it is older than metadata.max.age.ms.
        let (has_topics, needed) = {
            let st = inner.state.lock().unwrap();
            (!st.topics.is_empty(), st.metadata_needed)
        };
        let stale = inner
            .cluster
            .with_cache(|c| c.last_refresh)
            .is_none_or(|t| now.duration_since(t) >= inner.config.metadata_max_age);
        if (needed || stale)
            && has_topics
            && last_metadata_attempt.is_none_or(|t| now.duration_since(t) >= backoff)
        {
            let topics: Vec<String> = inner.state.lock().unwrap().topics.iter().cloned().collect();
            last_metadata_attempt = Some(now);
            inner.state.lock().unwrap().metadata_needed = false;
            if let Err(e) = inner.cluster.refresh(&topics).await {
                tracing::debug!("metadata refresh failed: {e}");
                inner.state.lock().unwrap().metadata_needed = true;
            }
            continue;
        }

        let silent = inner
            .state
            .lock()
            .unwrap()
            .in_flight
            .silent(now, SILENCE_CHECK);
        if !silent.is_empty()
            && last_silence_check.is_none_or(|t| now.duration_since(t) >= SILENCE_RECHECK)
        {
            last_silence_check = Some(now);
            abandon_moved_leaders(&inner, silent).await;
            continue;
        }

        let (requests, mut wake_at, more) = drain(&inner, now);
        for (node, batches) in requests {
            dispatch(&inner, node, batches).await;
        }
        if more {
            // Partitions with more batches queued: their next batches go in the next
            // requests now (pipelined up to max.in.flight.requests.per.connection), not only
            // once a response or a new record wakes the sender.
            continue;
        }
        if inner.state.lock().unwrap().metadata_needed {
            let at = last_metadata_attempt.map_or(now, |t| t + backoff);
            wake_at = wake_at.min(at);
        }
        if need_pid {
            let at = last_pid_attempt.map_or(now, |t| t + backoff);
            wake_at = wake_at.min(at);
        }
        if let Some(at) = add_retry_at {
            wake_at = wake_at.min(at);
        }
        // The next silence check, if a broker with requests outstanding stays silent.
        let silence_at = inner
            .state
            .lock()
            .unwrap()
            .in_flight
            .silent_at(SILENCE_CHECK);
        if let Some(at) = silence_at {
            let at = last_silence_check.map_or(at, |t| at.max(t + SILENCE_RECHECK));
            wake_at = wake_at.min(at);
        }
        let wake_at = wake_at.max(Instant::now() + Duration::from_millis(1));
        tokio::select! {
            _ = inner.wake_sender.notified() => {}
            _ = tokio::time::sleep_until(wake_at.into()) => {}
        }
    }
}

/// Asks a broker other than the `silent` ones for the leaders of the partitions those wait
/// on; a silent broker that no longer leads one of them is cut off: its outstanding requests
/// fail at once and their batches are retried at the new leader, in sequence order. (With
/// idempotence a batch the old leader did replicate is answered as a duplicate by the new
/// one; one it did not is written there; and the old leader, fenced, cannot acknowledge it.)
async fn abandon_moved_leaders(inner: &Inner, silent: Vec<(i32, Vec<Tp>)>) {
    let addrs: Vec<(i32, String, Vec<Tp>)> = silent
        .into_iter()
        .filter_map(|(node, tps)| Some((node, inner.cluster.address_of(node)?, tps)))
        .collect();
    let avoid: Vec<String> = addrs.iter().map(|(_, a, _)| a.clone()).collect();
    let mut topics: Vec<String> = addrs
        .iter()
        .flat_map(|(_, _, tps)| tps.iter().map(|tp| tp.0.clone()))
        .collect();
    topics.sort();
    topics.dedup();
    let refresh = inner.cluster.refresh_avoiding(&topics, &avoid);
    match tokio::time::timeout(SILENCE_CHECK, refresh).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return tracing::debug!("metadata from a broker that answers: {e}"),
        Err(_) => return tracing::debug!("metadata from a broker that answers: timed out"),
    }
    let cache = inner.cluster.snapshot();
    for (node, addr, tps) in addrs {
        let moved = tps
            .iter()
            .filter(|tp| cache.leader(&tp.0, tp.1).is_some_and(|l| l != node))
            .count();
        if moved > 0 {
            tracing::info!(
                "broker {node} ({addr}) has answered nothing for over {SILENCE_CHECK:?} and \
                 no longer leads {moved} of the partitions it holds requests for: \
                 retrying them at the new leaders"
            );
            inner.cluster.close_connection(&addr).await;
        }
    }
}

/// Fails batches that waited longer than `delivery.timeout.ms` (and with them an open
/// transaction, which cannot commit without them).
fn expire(inner: &Inner, now: Instant) {
    let timed_out = |b: &Batch| Error::DeliveryTimeout {
        topic: b.tp.0.clone(),
        partition: b.tp.1,
        delivery_timeout_ms: inner.config.delivery_timeout.as_millis() as u64,
        last_error: b
            .last_error
            .as_ref()
            .map_or("never sent".to_string(), |e| e.to_string()),
    };
    let expired = {
        let mut st = inner.state.lock().unwrap();
        let expired = st.expire(now, inner.config.delivery_timeout);
        if let (Some(txn), Some(b)) = (st.txn.as_mut(), expired.first()) {
            txn.fail(timed_out(b));
        }
        expired
    };
    if expired.is_empty() {
        return;
    }
    inner.metrics.lock().unwrap().record_errors +=
        expired.iter().map(|b| b.records.len() as u64).sum::<u64>();
    for b in expired {
        let err = timed_out(&b);
        b.complete(Err(err));
    }
    inner.completed.notify_waiters();
}

/// Picks ready batches (at most one per partition), grouped by leader; returns them, when to
/// look again, and whether a partition that gave a batch has more queued.
fn drain(inner: &Inner, now: Instant) -> (BTreeMap<i32, Vec<Batch>>, Instant, bool) {
    let config = &inner.config;
    let cache = inner.cluster.snapshot();
    let mut st = inner.state.lock().unwrap();
    let mut wake_at = now + IDLE;
    let mut out: BTreeMap<i32, Vec<Batch>> = BTreeMap::new();
    let mut request_bytes: BTreeMap<i32, usize> = BTreeMap::new();
    if st.idempotence.enabled && (st.idempotence.identity.is_none() || st.idempotence.needs_reset) {
        return (out, wake_at, false);
    }
    let identity = st.idempotence.identity;
    let flushing = st.flushing > 0 || st.closed;
    let mut metadata_needed = false;
    let mut more = false;
    let st = &mut *st;
    for (tp, q) in st.queues.iter_mut() {
        let Some(front) = q.batches.front() else {
            continue;
        };
        if st.txn.as_ref().is_some_and(|t| !t.may_send(tp)) {
            continue; // waits for AddPartitionsToTxn
        }
        if let Some(at) = front.retry_after {
            if at > now {
                wake_at = wake_at.min(at);
                continue;
            }
        }
        let linger_done = front.created + config.linger;
        let ready = flushing
            || q.batches.len() > 1
            || front.size >= config.batch_size
            || front.attempts > 0
            || now >= linger_done;
        if !ready {
            wake_at = wake_at.min(linger_done);
            continue;
        }
        let Some(leader) = cache.leader(&tp.0, tp.1) else {
            metadata_needed = true;
            continue;
        };
        // A new request to this leader needs a free in-flight slot on its connection.
        if !out.contains_key(&leader) && st.in_flight.at(leader) >= config.max_in_flight {
            continue;
        }
        let bytes = request_bytes.entry(leader).or_insert(0);
        if *bytes > 0 && *bytes + front.size > config.max_request_size {
            continue;
        }
        let mut batch = q.batches.pop_front().expect("front exists");
        *bytes += batch.size;
        if st.idempotence.enabled && batch.sequence.is_none() {
            let id = identity.expect("identity checked above");
            let seq = st.idempotence.reserve(tp, batch.records.len() as i32);
            batch.sequence = Some((id, seq));
        }
        batch.retry_after = None;
        if let Some((_, seq)) = batch.sequence {
            q.in_flight_sequences.push(seq);
        }
        inner.partitioner.on_batch_sent(&tp.0, tp.1);
        out.entry(leader).or_default().push(batch);
        more |= !q.batches.is_empty();
    }
    if metadata_needed {
        st.metadata_needed = true;
    }
    for (node, batches) in &out {
        st.in_flight.sent(*node, batches.iter().map(|b| &b.tp), now);
    }
    (out, wake_at, more)
}

/// InitProducerId for an idempotent (non-transactional) producer, at any broker.
async fn init_producer_id(inner: &Inner) -> Result<ProducerIdentity> {
    let conn = inner.cluster.any_connection().await?;
    txn_requests::init_producer_id(&conn, None, -1, None).await
}

/// Encodes and queues one Produce request on the leader's connection (in the sender task,
/// so requests reach each connection in drain order) and spawns the response handling.
async fn dispatch(inner: &Arc<Inner>, node: i32, mut batches: Vec<Batch>) {
    let config = &inner.config;
    let transactional = config.transactional_id.is_some();
    let mut encoded: Vec<Bytes> = Vec::with_capacity(batches.len());
    for b in &mut batches {
        match b.encode(config.compression, transactional) {
            Ok(bytes) => encoded.push(bytes),
            Err(e) => {
                // Cannot happen for well-formed records; fail the whole request's batches.
                finish(
                    inner,
                    node,
                    batches.into_iter().map(|b| (b, Err(e.clone()))).collect(),
                    None,
                );
                return;
            }
        }
    }
    let mut topics: BTreeMap<String, Vec<PartitionProduceData>> = BTreeMap::new();
    for (b, bytes) in batches.iter().zip(&encoded) {
        topics.entry(b.tp.0.clone()).or_default().push(
            PartitionProduceData::default()
                .with_index(b.tp.1)
                .with_records(Some(bytes.clone())),
        );
    }
    let request = ProduceRequest::default()
        .with_transactional_id(
            config
                .transactional_id
                .as_ref()
                .map(|id| TransactionalId(StrBytes::from_string(id.clone()))),
        )
        .with_acks(config.acks)
        .with_timeout_ms(config.request_timeout.as_millis().min(i32::MAX as u128) as i32)
        .with_topic_data(
            topics
                .into_iter()
                .map(|(name, parts)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partition_data(parts)
                })
                .collect(),
        );
    let request = RequestKind::Produce(request);
    let sizes: Vec<usize> = encoded.iter().map(Bytes::len).collect();
    let start = Instant::now();
    let conn = match inner.cluster.node_connection(node).await {
        Ok(c) => c,
        Err(e) => {
            fail_request(inner, node, batches, e);
            return;
        }
    };
    let inner = inner.clone();
    if config.acks == 0 {
        let written = match conn.send_without_response(ApiKey::Produce, &request) {
            Ok(f) => f,
            Err(e) => return fail_request(&inner, node, batches, e),
        };
        tokio::spawn(async move {
            match written.await {
                Ok(()) => {
                    record_request(&inner, start);
                    let results = batches.into_iter().map(|b| (b, Ok((-1, -1)))).collect();
                    finish(&inner, node, results, None);
                }
                Err(e) => fail_request(&inner, node, batches, e),
            }
        });
        return;
    }
    let response = match conn.send(ApiKey::Produce, &request) {
        Ok(f) => f,
        Err(e) => return fail_request(&inner, node, batches, e),
    };
    tokio::spawn(async move {
        match response.await {
            Ok(ResponseKind::Produce(r)) => {
                handle_response(&inner, node, batches, &sizes, r, start);
            }
            Ok(_) => fail_request(
                &inner,
                node,
                batches,
                Error::Protocol("unexpected response to Produce".into()),
            ),
            Err(e) => fail_request(&inner, node, batches, e),
        }
    });
}

/// Records the latency of a completed Produce request.
fn record_request(inner: &Inner, start: Instant) {
    let latency = start.elapsed();
    let mut m = inner.metrics.lock().unwrap();
    m.requests += 1;
    m.latency_total += latency;
    m.latency_max = m.latency_max.max(latency);
}

/// Outcome of one batch: `Ok((base_offset, log_append_time))` or the error.
type BatchResult = std::result::Result<(i64, i64), Error>;

fn handle_response(
    inner: &Inner,
    node: i32,
    batches: Vec<Batch>,
    sizes: &[usize],
    response: ProduceResponse,
    start: Instant,
) {
    record_request(inner, start);
    let mut results = Vec::with_capacity(batches.len());
    for b in batches {
        let part = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == b.tp.0)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == b.tp.1);
        let result = match part {
            None => Err(Error::Protocol(format!(
                "Produce response lacks {}-{}",
                b.tp.0, b.tp.1
            ))),
            Some(p) if p.error_code == 0 => Ok((p.base_offset, p.log_append_time_ms)),
            Some(p) if p.error_code == ResponseError::DuplicateSequenceNumber.code() => {
                // Already written by an earlier attempt whose response was lost.
                Ok((p.base_offset, p.log_append_time_ms))
            }
            Some(p) => Err(Error::broker(
                p.error_code,
                p.error_message.as_ref().map(|m| m.to_string()),
            )
            .expect("non-zero")),
        };
        results.push((b, result));
    }
    finish(inner, node, results, Some(sizes));
}

fn fail_request(inner: &Inner, node: i32, batches: Vec<Batch>, error: Error) {
    tracing::debug!("Produce request to node {node} failed: {error}");
    let results = batches
        .into_iter()
        .map(|b| (b, Err(error.clone())))
        .collect();
    finish(inner, node, results, None);
}

/// Applies batch outcomes: completes, retries or fails each batch, then wakes everyone.
fn finish(inner: &Inner, node: i32, results: Vec<(Batch, BatchResult)>, sizes: Option<&[usize]>) {
    let config = &inner.config;
    let now = Instant::now();
    let mut done: Vec<(Batch, BatchResult)> = Vec::new();
    {
        let mut st = inner.state.lock().unwrap();
        st.in_flight
            .ended(node, results.iter().map(|(b, _)| &b.tp), now);
        for (i, (mut batch, result)) in results.into_iter().enumerate() {
            if let (Some(q), Some((_, seq))) = (st.queues.get_mut(&batch.tp), batch.sequence) {
                q.in_flight_sequences.retain(|s| *s != seq);
            }
            let error = match result {
                Ok(ok) => {
                    let mut m = inner.metrics.lock().unwrap();
                    m.records_sent += batch.records.len() as u64;
                    m.batches_sent += 1;
                    m.bytes_sent +=
                        sizes.and_then(|s| s.get(i)).copied().unwrap_or(batch.size) as u64;
                    drop(m);
                    st.release(&mut batch);
                    done.push((batch, Ok(ok)));
                    continue;
                }
                Err(e) => e,
            };
            let out_of_order =
                error.response_error() == Some(ResponseError::OutOfOrderSequenceNumber);
            let seq = batch.sequence.map(|(_, s)| s);
            let earlier_pending = out_of_order
                && seq.is_some_and(|s| st.queues.get(&batch.tp).is_some_and(|q| q.has_earlier(s)));
            // The partition lost our producer state (e.g. it was recreated or truncated):
            // retry under a fresh producer identity with sequences restarted. (Inside a
            // transaction the identity cannot change: the transaction must abort.)
            let unknown_producer = batch.sequence.is_some()
                && st.txn.is_none()
                && error.response_error() == Some(ResponseError::UnknownProducerId);
            if unknown_producer {
                st.idempotence.needs_reset = true;
            }
            let retriable = error.is_retriable() || earlier_pending || unknown_producer;
            let expired = now.duration_since(batch.created) >= config.delivery_timeout;
            if retriable && !expired && (batch.attempts as i64) < config.retries as i64 {
                if error.invalidates_metadata() {
                    st.metadata_needed = true;
                }
                if let Error::Broker { error: e, .. } = &error {
                    if is_metadata_error(e.code()) {
                        st.metadata_needed = true;
                    }
                }
                tracing::debug!(
                    "retrying batch for {}-{} (attempt {}): {error}",
                    batch.tp.0,
                    batch.tp.1,
                    batch.attempts + 1
                );
                batch.attempts += 1;
                batch.retry_after = Some(now + config.retry_backoff);
                batch.last_error = Some(error);
                inner.metrics.lock().unwrap().retries += 1;
                st.queues
                    .entry(batch.tp.clone())
                    .or_default()
                    .requeue(batch);
                continue;
            }
            let error = if expired {
                Error::DeliveryTimeout {
                    topic: batch.tp.0.clone(),
                    partition: batch.tp.1,
                    delivery_timeout_ms: config.delivery_timeout.as_millis() as u64,
                    last_error: error.to_string(),
                }
            } else {
                error
            };
            if batch.sequence.is_some() {
                // A gap in the sequence: the next batches need a fresh producer identity.
                st.idempotence.needs_reset = true;
            }
            if let Some(txn) = st.txn.as_mut() {
                // The transaction cannot commit without this record.
                txn.fail(error.clone());
            }
            inner.metrics.lock().unwrap().record_errors += batch.records.len() as u64;
            st.release(&mut batch);
            done.push((batch, Err(error)));
        }
    }
    let lists: Vec<_> = done
        .into_iter()
        .map(|(batch, result)| batch.complete(result))
        .collect();
    {
        let mut st = inner.state.lock().unwrap();
        for list in lists {
            st.recycle_records(list);
        }
    }
    inner.completed.notify_waiters();
    inner.wake_sender.notify_one();
}
