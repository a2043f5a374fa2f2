//! ElectLeaders through librdkafka's admin API (`rd_kafka_ElectLeaders`, which the `rdkafka`
//! crate does not wrap), and through `gregor cluster elect-leaders` (the Gregor client).

use std::ffi::CStr;
use std::process::Command;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use super::cluster::client;

/// One partition's outcome: topic, partition, librdkafka's error code.
pub type Outcome = (String, i32, RDKafkaErrorCode);

/// Runs a preferred (`unclean` false) or unclean election for `partitions` with librdkafka
/// at `bootstrap`; each partition's outcome, or the request's error.
pub fn librdkafka_elect(
    bootstrap: &str,
    unclean: bool,
    partitions: &[(&str, i32)],
) -> Result<Vec<Outcome>, RDKafkaErrorCode> {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let mut list = TopicPartitionList::new();
    for (t, p) in partitions {
        list.add_partition(t, *p);
    }
    let kind = if unclean {
        rd::rd_kafka_ElectionType_t::RD_KAFKA_ELECTION_TYPE_UNCLEAN
    } else {
        rd::rd_kafka_ElectionType_t::RD_KAFKA_ELECTION_TYPE_PREFERRED
    };
    let rk = admin.inner().native_ptr();
    // SAFETY: every handle is created here and destroyed before returning; the result
    // event's partitions are read before the event is destroyed.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let request = rd::rd_kafka_ElectLeaders_new(kind, list.ptr());
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ELECTLEADERS,
        );
        rd::rd_kafka_ElectLeaders(rk, request, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, Duration::from_secs(30).as_millis() as i32);
        let outcome = if event.is_null() {
            Err(RDKafkaErrorCode::RequestTimedOut)
        } else if rd::rd_kafka_event_error(event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            Err(RDKafkaErrorCode::from(rd::rd_kafka_event_error(event)))
        } else {
            assert_eq!(
                rd::rd_kafka_event_type(event),
                rd::RD_KAFKA_EVENT_ELECTLEADERS_RESULT
            );
            let result = rd::rd_kafka_event_ElectLeaders_result(event);
            let mut n = 0usize;
            let items = rd::rd_kafka_ElectLeaders_result_partitions(result, &mut n);
            let mut out = Vec::new();
            for i in 0..n {
                let item = *items.add(i);
                let tp = &*rd::rd_kafka_topic_partition_result_partition(item);
                let error = rd::rd_kafka_topic_partition_result_error(item);
                let code = if error.is_null() {
                    RDKafkaErrorCode::NoError
                } else {
                    RDKafkaErrorCode::from(rd::rd_kafka_error_code(error))
                };
                let topic = CStr::from_ptr(tp.topic).to_string_lossy().into_owned();
                out.push((topic, tp.partition, code));
            }
            Ok(out)
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_ElectLeaders_destroy(request);
        rd::rd_kafka_queue_destroy(queue);
        outcome
    }
}

/// `gregor cluster elect-leaders --format json` at `bootstrap` with `args` (`--type`,
/// `--topic`, `--partition`): its exit code and `(topic, partition, result)` per line.
pub fn gregor_elect(bootstrap: &str, args: &[&str]) -> (i32, Vec<(String, i64, String)>) {
    let out = Command::new(env!("CARGO_BIN_EXE_gregor"))
        .args([
            "cluster",
            "elect-leaders",
            "--format",
            "json",
            "--brokers",
            bootstrap,
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "elect-leaders printed no JSON ({e}): {text} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rows = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["topic"].as_str().unwrap().to_string(),
                r["partition"].as_i64().unwrap(),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.code().unwrap_or(-1), rows)
}
