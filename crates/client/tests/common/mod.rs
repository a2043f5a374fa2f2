//! Test support shared by the client's integration tests: a real in-process Gregor broker on
//! an ephemeral port, and a client config pointing at it.

#![allow(dead_code)]

use gregor_broker::{BrokerConfig, BrokerHandle};
use gregor_client::ClientConfig;

/// Starts a broker on 127.0.0.1:0 with data in `dir` and extra broker `overrides`.
pub async fn start_broker(dir: &std::path::Path, overrides: &[(&str, &str)]) -> BrokerHandle {
    let mut pairs = vec![
        (
            "listeners".to_string(),
            "PLAINTEXT://127.0.0.1:0".to_string(),
        ),
        ("log.dirs".to_string(), dir.display().to_string()),
    ];
    pairs.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    gregor_broker::start(BrokerConfig::from_pairs(pairs).expect("valid test config"))
        .await
        .expect("broker starts")
}

/// A client config for `broker` with `extra` properties.
pub fn config(broker: &BrokerHandle, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", broker.local_addr.to_string());
    for (k, v) in extra {
        c.set(*k, *v);
    }
    c
}
