//! The network half of transactions: InitProducerId, and the round trips to the
//! transaction coordinator (FindCoordinator key type 1: AddPartitionsToTxn, AddOffsetsToTxn,
//! EndTxn) and to the group coordinator (TxnOffsetCommit), with retries of coordinator and
//! CONCURRENT_TRANSACTIONS errors. The decisions live in `txn_state`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, RequestKind, ResponseKind, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::shared::Inner;
use super::txn_state::{classify, Outcome};
use crate::accumulator::{ProducerIdentity, Tp};
use crate::connection::Connection;
use crate::consumer::ConsumerGroupMetadata;
use crate::error::{Error, Result};
use crate::requests::{by_topic, topic_name};

/// Backoff after CONCURRENT_TRANSACTIONS on AddPartitionsToTxn: the previous transaction is
/// usually done within milliseconds (as the Java client's 20 ms).
const ADD_PARTITIONS_BACKOFF: Duration = Duration::from_millis(20);

/// Which coordinator a request goes to.
#[derive(Clone, Copy)]
enum Coordinator<'a> {
    /// The transaction coordinator of the producer's `transactional.id`.
    Transaction,
    /// The coordinator of this consumer group.
    Group(&'a str),
}

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

/// InitProducerId on `conn`: a fresh id (`expected` = None) or the next epoch of `expected`
/// (KIP-360); `transactional_id` makes it a transactional producer's.
pub(crate) async fn init_producer_id(
    conn: &Connection,
    transactional_id: Option<&str>,
    transaction_timeout_ms: i32,
    expected: Option<ProducerIdentity>,
) -> Result<ProducerIdentity> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(txn_id))
        .with_transaction_timeout_ms(transaction_timeout_ms)
        .with_producer_id(ProducerId(expected.map_or(-1, |e| e.producer_id)))
        .with_producer_epoch(expected.map_or(-1, |e| e.epoch));
    match conn
        .send(
            ApiKey::InitProducerId,
            &RequestKind::InitProducerId(request),
        )?
        .await?
    {
        ResponseKind::InitProducerId(r) => {
            if let Some(e) = Error::broker(r.error_code, Some("InitProducerId".into())) {
                return Err(e);
            }
            Ok(ProducerIdentity {
                producer_id: r.producer_id.0,
                epoch: r.producer_epoch,
            })
        }
        _ => Err(Error::Protocol(
            "unexpected response to InitProducerId".into(),
        )),
    }
}

impl Inner {
    fn transactional_id(&self) -> &str {
        self.config
            .transactional_id
            .as_deref()
            .expect("transactional producer")
    }

    /// A connection to the coordinator, looked up again when `rediscover` (the transaction
    /// coordinator's connection is cached until then).
    async fn coordinator(
        &self,
        which: Coordinator<'_>,
        rediscover: bool,
    ) -> Result<Arc<Connection>> {
        let mut cached = self.txn_coordinator.lock().await;
        let (key, key_type) = match which {
            Coordinator::Group(group) => (group, 0),
            Coordinator::Transaction => {
                if let Some(c) = cached.as_ref().filter(|c| !c.is_closed() && !rediscover) {
                    return Ok(c.clone());
                }
                (self.transactional_id(), 1)
            }
        };
        let addr = self.cluster.find_coordinator(key, key_type).await?;
        let conn = self.cluster.connection(&addr).await?;
        if matches!(which, Coordinator::Transaction) {
            *cached = Some(conn.clone());
        }
        Ok(conn)
    }

    /// Runs `op` on the coordinator until it succeeds or fails for good, backing off (and
    /// rediscovering the coordinator) on retriable errors; the caller bounds it in time.
    /// Errors are classified: fatal ones come back as `ProducerFenced` / `TransactionFatal`,
    /// others as their cause.
    async fn with_retries<T, F, Fut>(&self, which: Coordinator<'_>, op: F) -> Result<T>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut rediscover = false;
        loop {
            let result = match self.coordinator(which, rediscover).await {
                Ok(conn) => op(conn).await,
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify(error.clone()) {
                Outcome::Retry { rediscover: r } => {
                    tracing::debug!("transactional request will be retried: {error}");
                    rediscover = r;
                    let backoff =
                        if error.response_error() == Some(ResponseError::ConcurrentTransactions) {
                            ADD_PARTITIONS_BACKOFF.min(self.config.retry_backoff)
                        } else {
                            self.config.retry_backoff
                        };
                    tokio::time::sleep(backoff).await;
                }
                Outcome::Fatal(e) => return Err(e),
                Outcome::Abortable(e) => return Err(e),
            }
        }
    }

    /// InitProducerId for the transactional id at its coordinator.
    pub(crate) async fn init_transactional(
        &self,
        expected: Option<ProducerIdentity>,
    ) -> Result<ProducerIdentity> {
        let timeout_ms = self
            .config
            .transaction_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32;
        self.with_retries(Coordinator::Transaction, |conn| async move {
            init_producer_id(&conn, Some(self.transactional_id()), timeout_ms, expected).await
        })
        .await
    }

    /// One AddPartitionsToTxn attempt for `tps` (called by the sender task); the outcome is
    /// recorded in the transaction manager: added, to retry after a backoff, or failed.
    pub(crate) async fn add_partitions(&self, identity: ProducerIdentity, tps: Vec<Tp>) {
        let items: Vec<(String, i32, ())> = tps.iter().map(|(t, p)| (t.clone(), *p, ())).collect();
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(self.transactional_id()))
            .with_v3_and_below_producer_id(ProducerId(identity.producer_id))
            .with_v3_and_below_producer_epoch(identity.epoch)
            .with_v3_and_below_topics(
                by_topic(&items)
                    .into_iter()
                    .map(|(t, ps)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(topic_name(&t))
                            .with_partitions(ps.into_iter().map(|(p, _)| p).collect())
                    })
                    .collect(),
            );
        let result = async {
            let conn = self.coordinator(Coordinator::Transaction, false).await?;
            let ResponseKind::AddPartitionsToTxn(r) = conn
                .send(
                    ApiKey::AddPartitionsToTxn,
                    &RequestKind::AddPartitionsToTxn(request),
                )?
                .await?
            else {
                return Err(Error::Protocol(
                    "unexpected response to AddPartitionsToTxn".into(),
                ));
            };
            let mut codes = Vec::new();
            for t in &r.results_by_topic_v3_and_below {
                for p in &t.results_by_partition {
                    codes.push((
                        (t.name.0.to_string(), p.partition_index),
                        p.partition_error_code,
                    ));
                }
            }
            Ok(codes)
        }
        .await;
        let now = Instant::now();
        let mut added = Vec::new();
        let mut retry = Vec::new();
        let mut failure: Option<Error> = None;
        let mut rediscover = false;
        match result {
            Ok(codes) => {
                for tp in &tps {
                    let code = codes.iter().find(|(c, _)| c == tp).map(|(_, code)| *code);
                    let error = match code {
                        Some(0) => {
                            added.push(tp.clone());
                            continue;
                        }
                        Some(c) if c == ResponseError::OperationNotAttempted.code() => {
                            retry.push(tp.clone());
                            continue;
                        }
                        Some(c) => {
                            Error::broker(c, Some(format!("AddPartitionsToTxn {}-{}", tp.0, tp.1)))
                                .expect("non-zero")
                        }
                        None => Error::Protocol(format!(
                            "AddPartitionsToTxn response lacks {}-{}",
                            tp.0, tp.1
                        )),
                    };
                    match classify(error) {
                        Outcome::Retry { rediscover: r } => {
                            rediscover |= r;
                            retry.push(tp.clone());
                        }
                        Outcome::Fatal(e) | Outcome::Abortable(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
            }
            Err(e) => match classify(e) {
                Outcome::Retry { rediscover: r } => {
                    rediscover = r;
                    retry = tps.clone();
                }
                Outcome::Fatal(e) | Outcome::Abortable(e) => failure = Some(e),
            },
        }
        if rediscover {
            *self.txn_coordinator.lock().await = None;
        }
        {
            let mut st = self.state.lock().unwrap();
            let txn = st.txn.as_mut().expect("transactional producer");
            txn.partitions_added(&added);
            if let Some(e) = failure {
                tracing::debug!("AddPartitionsToTxn failed: {e}");
                txn.forget_partitions(&tps);
                txn.fail(e);
            } else if !retry.is_empty() {
                let backoff = ADD_PARTITIONS_BACKOFF.min(self.config.retry_backoff);
                txn.retry_partitions(&retry, now + backoff);
            }
        }
        self.completed.notify_waiters();
        self.wake_sender.notify_one();
    }

    /// AddOffsetsToTxn: puts the group's offsets partition into the transaction.
    pub(crate) async fn add_offsets(&self, identity: ProducerIdentity, group: &str) -> Result<()> {
        let request = AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn_id(self.transactional_id()))
            .with_producer_id(ProducerId(identity.producer_id))
            .with_producer_epoch(identity.epoch)
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())));
        self.with_retries(Coordinator::Transaction, |conn| {
            let request = request.clone();
            async move {
                let ResponseKind::AddOffsetsToTxn(r) = conn
                    .send(
                        ApiKey::AddOffsetsToTxn,
                        &RequestKind::AddOffsetsToTxn(request),
                    )?
                    .await?
                else {
                    return Err(Error::Protocol(
                        "unexpected response to AddOffsetsToTxn".into(),
                    ));
                };
                match Error::broker(r.error_code, Some(format!("AddOffsetsToTxn {group}"))) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
        })
        .await
    }

    /// TxnOffsetCommit at the group coordinator: the offsets become visible on commit.
    pub(crate) async fn txn_offset_commit(
        &self,
        identity: ProducerIdentity,
        offsets: &[(String, i32, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(txn_id(self.transactional_id()))
            .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())))
            .with_producer_id(ProducerId(identity.producer_id))
            .with_producer_epoch(identity.epoch)
            .with_generation_id(group.generation_id)
            .with_member_id(StrBytes::from_string(group.member_id.clone()))
            .with_group_instance_id(
                group
                    .group_instance_id
                    .as_ref()
                    .map(|i| StrBytes::from_string(i.clone())),
            )
            .with_topics(
                by_topic(offsets)
                    .into_iter()
                    .map(|(t, ps)| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(topic_name(&t))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|(p, o)| {
                                        TxnOffsetCommitRequestPartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                            .with_committed_leader_epoch(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        self.with_retries(Coordinator::Group(&group.group_id), |conn| {
            let request = request.clone();
            async move {
                let ResponseKind::TxnOffsetCommit(r) = conn
                    .send(
                        ApiKey::TxnOffsetCommit,
                        &RequestKind::TxnOffsetCommit(request),
                    )?
                    .await?
                else {
                    return Err(Error::Protocol(
                        "unexpected response to TxnOffsetCommit".into(),
                    ));
                };
                for t in &r.topics {
                    for p in &t.partitions {
                        let what =
                            format!("TxnOffsetCommit {}-{}", t.name.as_str(), p.partition_index);
                        if let Some(e) = Error::broker(p.error_code, Some(what)) {
                            return Err(e);
                        }
                    }
                }
                Ok(())
            }
        })
        .await
    }

    /// EndTxn (commit or abort). With EndTxn v5 (KIP-890) the coordinator bumps the epoch
    /// and returns the identity for the next transaction.
    pub(crate) async fn end_txn(
        &self,
        identity: ProducerIdentity,
        commit: bool,
    ) -> Result<Option<ProducerIdentity>> {
        let request = EndTxnRequest::default()
            .with_transactional_id(txn_id(self.transactional_id()))
            .with_producer_id(ProducerId(identity.producer_id))
            .with_producer_epoch(identity.epoch)
            .with_committed(commit);
        self.with_retries(Coordinator::Transaction, |conn| {
            let request = request.clone();
            async move {
                let version = conn.require_version(ApiKey::EndTxn)?;
                let ResponseKind::EndTxn(r) = conn
                    .send_versioned(ApiKey::EndTxn, version, &RequestKind::EndTxn(request))?
                    .await?
                else {
                    return Err(Error::Protocol("unexpected response to EndTxn".into()));
                };
                if let Some(e) = Error::broker(r.error_code, Some("EndTxn".into())) {
                    return Err(e);
                }
                Ok(
                    (version >= 5 && r.producer_id.0 >= 0).then_some(ProducerIdentity {
                        producer_id: r.producer_id.0,
                        epoch: r.producer_epoch,
                    }),
                )
            }
        })
        .await
    }
}
