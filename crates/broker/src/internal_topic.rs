//! Reading back the internal topics (`__consumer_offsets`, `__transaction_state`) that
//! coordinators replay at start-up to rebuild their state.

use crate::group::offsets_log::{decode_kv_batches, KvBatch};
use crate::partition::Partition;

/// Every batch of `partition` from its log start to its high watermark, decoded.
pub fn read_kv_batches(partition: &Partition) -> Result<Vec<KvBatch>, String> {
    const CHUNK_BYTES: usize = 1 << 20;
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset();
    let hw = partition.high_watermark();
    while offset < hw {
        let read = partition
            .read(offset, CHUNK_BYTES, true)
            .map_err(|e| e.to_string())?;
        if read.records.is_empty() {
            break;
        }
        let mut next = offset;
        for batch in decode_kv_batches(&read.records).map_err(|e| e.to_string())? {
            // A read starts at the batch holding `offset`; batches already seen are skipped.
            let last = batch.last_offset;
            if last >= offset {
                out.push(batch);
            }
            next = next.max(last + 1);
        }
        offset = next;
    }
    Ok(out)
}
