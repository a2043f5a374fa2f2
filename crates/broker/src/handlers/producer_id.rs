//! InitProducerId for idempotent producers: a fresh producer id (from blocks reserved in the
//! metadata log, so an id is never handed out twice, even across restarts), or the next epoch
//! of an existing id (KIP-360) so a producer can recover from an unknown-producer or
//! sequence error without a new id. With a transactional id the transaction coordinator
//! answers (and fences the id's previous producer).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::wire::{code, NONE};
use crate::broker::Broker;
use crate::txn::state::{code as txn_code, code_for_version, TxnError};

pub fn init_producer_id(
    broker: &Broker,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let error = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code(e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(tid) = request
        .transactional_id
        .as_ref()
        .filter(|t| !t.0.is_empty())
    {
        let expected = (request.producer_id.0 >= 0 && request.producer_epoch >= 0)
            .then_some((request.producer_id.0, request.producer_epoch));
        let result = broker
            .ensure_txn_state_topic()
            .map_err(|e| TxnError(txn_code::COORDINATOR_NOT_AVAILABLE, e.to_string()))
            .and_then(|()| {
                broker.txns.init_producer_id(
                    broker,
                    tid.0.as_str(),
                    request.transaction_timeout_ms,
                    expected,
                )
            });
        return match result {
            Ok((id, epoch)) => InitProducerIdResponse::default()
                .with_error_code(NONE)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(TxnError(c, reason)) => {
                tracing::debug!(transactional_id = %tid.0.as_str(), code = c, %reason, "InitProducerId refused");
                // PRODUCER_FENCED is known to clients from v4 on.
                InitProducerIdResponse::default()
                    .with_error_code(code_for_version(c, version, 4))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        };
    }
    let (id, epoch) = if request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        if request.producer_epoch < i16::MAX - 1 {
            (request.producer_id.0, request.producer_epoch + 1)
        } else {
            // The epoch is exhausted: a new id starts again at epoch 0.
            match broker.next_producer_id() {
                Ok(id) => (id, 0),
                Err(_) => return error(ResponseError::CoordinatorNotAvailable),
            }
        }
    } else {
        match broker.next_producer_id() {
            Ok(id) => (id, 0),
            Err(_) => return error(ResponseError::CoordinatorNotAvailable),
        }
    };
    InitProducerIdResponse::default()
        .with_error_code(NONE)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}
