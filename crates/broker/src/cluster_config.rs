//! The cluster settings of a node, with Kafka's names: `process.roles`, `node.id`,
//! `controller.quorum.voters` (`id@host:port,...`), `controller.listener.names` and the
//! CONTROLLER entry of `listeners`. Checked as a whole at start-up, so a misconfigured node
//! stops with one clear error instead of half-starting.
//!
//! Without `controller.quorum.voters` the node is a quorum of one (both roles, as `gregor
//! broker` with no arguments starts). A node with both roles is a voter; a node with only
//! the broker role is an observer of the metadata log (it follows it without voting and
//! has no CONTROLLER listener); a node with only the controller role is a voter that serves
//! no clients (its `listeners` hold only the CONTROLLER listener).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::config::{BrokerConfig, ConfigError};

/// What a node needs to join the metadata quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: i32,
    /// Every voter's quorum address; a voter's own is where it listens for the others.
    pub voters: BTreeMap<i32, SocketAddr>,
    /// A broker-only node (an observer): where it listens for the leader's replication,
    /// on its client listener's address and a port of the system's choosing.
    pub observer_listen: Option<SocketAddr>,
}

/// The voters of `controller.quorum.voters`: `id@host:port` entries separated by commas.
pub fn parse_voters(raw: &str) -> Result<BTreeMap<i32, SocketAddr>, String> {
    let mut voters = BTreeMap::new();
    let mut addresses = BTreeSet::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("voter '{entry}' is not id@host:port"))?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("voter '{entry}' has an invalid node id"))?;
        let addr = addr.trim().replace("localhost", "127.0.0.1");
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("voter '{entry}': '{addr}' is not an IP address and port"))?;
        if voters.insert(id, addr).is_some() {
            return Err(format!("node id {id} appears twice among the voters"));
        }
        if !addresses.insert(addr) {
            return Err(format!("address {addr} appears twice among the voters"));
        }
    }
    Ok(voters)
}

/// The cluster settings of `config`, checked together.
pub fn cluster_config(config: &BrokerConfig) -> Result<ClusterConfig, ConfigError> {
    let err = |m: String| ConfigError(m);
    let node_id = config.node_id();
    let roles: BTreeSet<&str> = config
        .get("process.roles")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    if let Some(bad) = roles
        .iter()
        .find(|r| !["broker", "controller"].contains(*r))
    {
        return Err(err(format!(
            "invalid value for 'process.roles': unknown role '{bad}' (broker, controller)"
        )));
    }
    if roles.is_empty() {
        return Err(err(
            "invalid value for 'process.roles': it is empty (broker, controller, or broker,controller)".into(),
        ));
    }
    let raw_voters = config.get("controller.quorum.voters").unwrap_or_default();
    let voters = parse_voters(raw_voters)
        .map_err(|e| err(format!("invalid value for 'controller.quorum.voters': {e}")))?;
    let controller_listener = config
        .controller_listener()
        .map_err(|e| err(format!("invalid value for 'listeners': {e}")))?;
    if !roles.contains("controller") {
        return observer_config(config, node_id, voters, controller_listener);
    }
    if !roles.contains("broker") {
        if voters.is_empty() {
            return Err(err(
                "a controller-only node (process.roles=controller) needs controller.quorum.voters; a single node is broker,controller".into(),
            ));
        }
        if config.has_client_listener() {
            return Err(err(format!(
                "a controller-only node serves no clients: 'listeners' may hold only the {} listener",
                config.controller_listener_name()
            )));
        }
    }
    if voters.is_empty() {
        // A quorum of one: its own listener when one is configured, else none is needed.
        let addr = controller_listener.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        return Ok(ClusterConfig {
            node_id,
            voters: BTreeMap::from([(node_id, addr)]),
            observer_listen: None,
        });
    }
    let Some(mine) = voters.get(&node_id).copied() else {
        return Err(err(format!(
            "node.id {node_id} is not one of the controller.quorum.voters ({}): a controller must be a voter",
            raw_voters
        )));
    };
    let Some(listen) = controller_listener else {
        return Err(err(format!(
            "'listeners' has no {} listener for the quorum; add e.g. {}://{mine}",
            config.controller_listener_name(),
            config.controller_listener_name()
        )));
    };
    if listen.port() != mine.port() {
        return Err(err(format!(
            "the {} listener {listen} does not match this node's voter address {mine}",
            config.controller_listener_name()
        )));
    }
    let mut voters = voters;
    // Listen where the listener says (e.g. 0.0.0.0), be reached where the voters say.
    voters.insert(node_id, SocketAddr::new(listen.ip(), mine.port()));
    Ok(ClusterConfig {
        node_id,
        voters,
        observer_listen: None,
    })
}

/// A broker-only node: it needs the voters, must not be one, and has no CONTROLLER listener.
fn observer_config(
    config: &BrokerConfig,
    node_id: i32,
    voters: BTreeMap<i32, SocketAddr>,
    controller_listener: Option<SocketAddr>,
) -> Result<ClusterConfig, ConfigError> {
    let err = |m: String| ConfigError(m);
    if voters.is_empty() {
        return Err(err(
            "a broker-only node (process.roles=broker) needs controller.quorum.voters to find the controllers".into(),
        ));
    }
    if voters.contains_key(&node_id) {
        return Err(err(format!(
            "node.id {node_id} is one of the controller.quorum.voters, but process.roles has no controller role"
        )));
    }
    if controller_listener.is_some() {
        return Err(err(format!(
            "'listeners' has a {} listener, but this node is not a controller (process.roles=broker)",
            config.controller_listener_name()
        )));
    }
    let client = config.listener()?;
    Ok(ClusterConfig {
        node_id,
        voters,
        observer_listen: Some(SocketAddr::new(client.ip(), 0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<ClusterConfig, ConfigError> {
        let c =
            BrokerConfig::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        cluster_config(&c)
    }

    #[test]
    fn no_voters_is_a_quorum_of_one() {
        let c = config(&[]).unwrap();
        assert_eq!(c.voters.len(), 1);
        assert_eq!(c.voters[&1].port(), 0);
    }

    #[test]
    fn three_voters() {
        let c = config(&[
            ("node.id", "2"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:9093, 2@127.0.0.1:9094,3@localhost:9095",
            ),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9094",
            ),
        ])
        .unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.voters[&3].to_string(), "127.0.0.1:9095");
    }

    #[test]
    fn a_controller_only_node_votes() {
        let c = config(&[
            ("process.roles", "controller"),
            ("node.id", "1"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.1:9094",
            ),
            ("listeners", "CONTROLLER://127.0.0.1:9093"),
        ])
        .unwrap();
        assert_eq!(c.voters[&1].to_string(), "127.0.0.1:9093");
        assert_eq!(c.observer_listen, None);
    }

    #[test]
    fn a_broker_only_node_observes() {
        let c = config(&[
            ("process.roles", "broker"),
            ("node.id", "4"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.1:9094",
            ),
            ("listeners", "PLAINTEXT://127.0.0.1:9092"),
        ])
        .unwrap();
        assert_eq!(c.voters.len(), 2);
        assert_eq!(c.observer_listen, Some("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn misconfigurations_are_refused_with_a_reason() {
        let voters = "1@127.0.0.1:9093,2@127.0.0.1:9094";
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[(
                    "controller.quorum.voters",
                    "1@127.0.0.1:9093,1@127.0.0.1:9094",
                )],
                "appears twice",
            ),
            (
                &[(
                    "controller.quorum.voters",
                    "1@127.0.0.1:9093,2@127.0.0.1:9093",
                )],
                "appears twice",
            ),
            (
                &[("controller.quorum.voters", "one@127.0.0.1:9093")],
                "invalid node id",
            ),
            (
                &[("controller.quorum.voters", "1-127.0.0.1:9093")],
                "id@host:port",
            ),
            (
                &[("controller.quorum.voters", "1@nowhere:x")],
                "not an IP address",
            ),
            (
                &[
                    ("node.id", "3"),
                    ("controller.quorum.voters", voters),
                    (
                        "listeners",
                        "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:9095",
                    ),
                ],
                "not one of the controller.quorum.voters",
            ),
            (
                &[("controller.quorum.voters", voters)],
                "no CONTROLLER listener",
            ),
            (
                &[
                    ("controller.quorum.voters", voters),
                    (
                        "listeners",
                        "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:9999",
                    ),
                ],
                "does not match",
            ),
            (
                &[("process.roles", "controller")],
                "needs controller.quorum.voters",
            ),
            (
                &[
                    ("process.roles", "controller"),
                    ("controller.quorum.voters", voters),
                    (
                        "listeners",
                        "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:9093",
                    ),
                ],
                "serves no clients",
            ),
            (
                &[("process.roles", "broker")],
                "needs controller.quorum.voters",
            ),
            (
                &[
                    ("process.roles", "broker"),
                    ("node.id", "2"),
                    ("controller.quorum.voters", voters),
                ],
                "has no controller role",
            ),
            (
                &[
                    ("process.roles", "broker"),
                    ("node.id", "3"),
                    ("controller.quorum.voters", voters),
                    (
                        "listeners",
                        "PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:9095",
                    ),
                ],
                "not a controller",
            ),
            (&[("process.roles", "broker,chef")], "unknown role"),
        ];
        for (pairs, reason) in cases {
            let e = config(pairs).expect_err(reason);
            assert!(e.0.contains(reason), "{pairs:?}: {e}");
        }
    }
}
