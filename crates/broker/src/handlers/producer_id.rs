//! InitProducerId for idempotent producers: a fresh producer id (from blocks reserved in the
//! metadata log, so an id is never handed out twice, even across restarts), or the next epoch
//! of an existing id (KIP-360) so a producer can recover from an unknown-producer or
//! sequence error without a new id. Transactional ids are not served yet.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{code, NONE};
use crate::broker::Broker;

pub fn init_producer_id(broker: &Broker, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let error = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code(e))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        // Transactions (a coordinator per transactional.id) are not built yet.
        return error(ResponseError::InvalidRequest);
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
