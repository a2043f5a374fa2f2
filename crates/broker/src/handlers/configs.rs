//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and this broker.
//!
//! A value's source follows Kafka: a topic override (DYNAMIC_TOPIC_CONFIG), a dynamic
//! broker value (DYNAMIC_BROKER_CONFIG), the broker's file or overrides
//! (STATIC_BROKER_CONFIG), or the built-in default (DEFAULT_CONFIG).

use std::collections::BTreeMap;

use gregor_metadata::config::{ConfigType, TOPIC_CONFIGS};
use gregor_metadata::{ConfigResource, ControllerOp};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::wire::commit_error;
use super::wire::{code, s, NONE};
use crate::broker::Broker;
use crate::config::{broker_config, BROKER_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// One described config value.
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub ty: ConfigType,
    pub doc: &'static str,
    /// (synonym key, value, source), most specific first, this entry's own source included.
    pub synonyms: Vec<(String, String, i8)>,
}

/// The effective configs of topic `name`, with `extra` overrides not yet stored.
pub fn topic_entries(broker: &Broker, name: &str, extra: &[(String, String)]) -> Vec<ConfigEntry> {
    let image = broker.image();
    let mut overrides = image.configs_of(&ConfigResource::Topic(name.to_string()));
    overrides.extend(extra.iter().cloned());
    let dynamic_broker = image.configs_of(&ConfigResource::Broker(broker.node_id));
    let config = broker.config();
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(d.name) {
                synonyms.push((d.name.to_string(), v.clone(), SOURCE_DYNAMIC_TOPIC));
            }
            if let Some(key) = d.broker_synonym {
                if let Some(v) = dynamic_broker.get(key) {
                    synonyms.push((key.to_string(), v.clone(), SOURCE_DYNAMIC_BROKER));
                } else if broker.static_config().is_set(key) {
                    if let Some(v) = config.topic_default(d.name) {
                        synonyms.push((key.to_string(), v, SOURCE_STATIC_BROKER));
                    }
                }
            }
            let default = config
                .topic_default(d.name)
                .unwrap_or_else(|| d.default.to_string());
            synonyms.push((
                d.broker_synonym.unwrap_or(d.name).to_string(),
                default.clone(),
                SOURCE_DEFAULT,
            ));
            let (value, source) = synonyms
                .first()
                .map(|(_, v, src)| (v.clone(), *src))
                .expect("at least the default");
            ConfigEntry {
                name: d.name.to_string(),
                value: Some(value),
                source,
                read_only: false,
                ty: d.ty,
                doc: d.doc,
                synonyms,
            }
        })
        .collect()
}

/// Whether a broker key can be changed at run time (it supplies a topic default).
fn broker_key_is_dynamic(key: &str) -> bool {
    TOPIC_CONFIGS.iter().any(|d| d.broker_synonym == Some(key))
        || matches!(
            key,
            "log.retention.hours"
                | "log.retention.minutes"
                | "log.roll.hours"
                | "log.flush.scheduler.interval.ms"
                | "leader.replication.throttled.rate"
                | "follower.replication.throttled.rate"
        )
}

fn broker_entries(broker: &Broker) -> Vec<ConfigEntry> {
    let dynamic = broker
        .image()
        .configs_of(&ConfigResource::Broker(broker.node_id));
    let config = broker.config();
    BROKER_CONFIGS
        .iter()
        .map(|d| {
            let source = if dynamic.contains_key(d.name) {
                SOURCE_DYNAMIC_BROKER
            } else if broker.static_config().is_set(d.name) {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            let value = config.get(d.name).map(str::to_string);
            ConfigEntry {
                name: d.name.to_string(),
                synonyms: value
                    .iter()
                    .map(|v| (d.name.to_string(), v.clone(), source))
                    .collect(),
                value,
                source,
                read_only: !broker_key_is_dynamic(d.name),
                ty: d.ty,
                doc: d.doc,
            }
        })
        .collect()
}

fn is_this_broker(broker: &Broker, name: &str) -> bool {
    name.is_empty() || name.parse::<i32>().ok() == Some(broker.node_id)
}

pub fn describe(
    broker: &Broker,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                RESOURCE_TOPIC => {
                    if broker.image().topic(&name).is_none() {
                        return result
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            .with_error_message(Some(s(format!("topic '{name}' does not exist"))));
                    }
                    topic_entries(broker, &name, &[])
                }
                RESOURCE_BROKER if is_this_broker(broker, &name) => broker_entries(broker),
                RESOURCE_BROKER => {
                    return result
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(s(format!(
                            "broker '{name}' is not this broker ({})",
                            broker.node_id
                        ))))
                }
                other => {
                    return result
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(s(format!(
                            "resource type {other} is not supported"
                        ))))
                }
            };
            let wanted = r
                .configuration_keys
                .map(|k| k.iter().map(|k| k.to_string()).collect::<Vec<_>>());
            let configs = entries
                .into_iter()
                .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(&e.name)))
                .map(|e| {
                    let synonyms = if request.include_synonyms {
                        e.synonyms
                            .iter()
                            .map(|(n, v, src)| {
                                DescribeConfigsSynonym::default()
                                    .with_name(s(n.clone()))
                                    .with_value(Some(s(v.clone())))
                                    .with_source(*src)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let mut out = DescribeConfigsResourceResult::default()
                        .with_name(s(e.name))
                        .with_value(e.value.map(s))
                        .with_read_only(e.read_only)
                        .with_config_source(e.source)
                        .with_is_sensitive(false)
                        .with_synonyms(synonyms)
                        .with_config_type(e.ty.kafka_type_code());
                    if version >= 3 && request.include_documentation {
                        out = out.with_documentation(Some(s(e.doc)));
                    }
                    out
                })
                .collect();
            result.with_error_code(NONE).with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Applies `changes` (key → Some(value) to set, None to remove) to one resource.
fn apply(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    changes: Vec<(String, Option<String>)>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    match resource_type {
        RESOURCE_TOPIC => broker
            .commit(ControllerOp::AlterTopicConfigs {
                name: name.to_string(),
                changes: changes.clone(),
                validate_only,
            })
            .map(|_| ())
            .map_err(|e| commit_error(&e)),
        RESOURCE_BROKER if is_this_broker(broker, name) => {
            for (k, v) in &changes {
                let def = broker_config(k).ok_or_else(|| {
                    (
                        code(ResponseError::InvalidConfig),
                        format!("unknown broker config '{k}'"),
                    )
                })?;
                if !broker_key_is_dynamic(k) {
                    return Err((
                        code(ResponseError::InvalidRequest),
                        format!("broker config '{k}' cannot be updated dynamically"),
                    ));
                }
                if let Some(v) = v {
                    def.ty.validate(v).map_err(|e| {
                        (
                            code(ResponseError::InvalidConfig),
                            format!("invalid value for '{k}': {e}"),
                        )
                    })?;
                }
            }
            if validate_only {
                return Ok(());
            }
            broker
                .commit(ControllerOp::AlterBrokerConfigs {
                    node_id: broker.node_id,
                    changes,
                })
                .map(|_| ())
                .map_err(|e| commit_error(&e))
        }
        RESOURCE_BROKER => Err((
            code(ResponseError::InvalidRequest),
            format!("broker '{name}' is not this broker ({})", broker.node_id),
        )),
        other => Err((
            code(ResponseError::InvalidRequest),
            format!("resource type {other} is not supported"),
        )),
    }
}

fn current_settings(broker: &Broker, resource_type: i8, name: &str) -> BTreeMap<String, String> {
    let resource = match resource_type {
        RESOURCE_TOPIC => ConfigResource::Topic(name.to_string()),
        _ => ConfigResource::Broker(broker.node_id),
    };
    broker.image().configs_of(&resource)
}

pub fn alter(broker: &Broker, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            // Legacy AlterConfigs replaces the whole set: unspecified keys are removed.
            let mut changes: Vec<(String, Option<String>)> = r
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            for key in current_settings(broker, r.resource_type, &name).into_keys() {
                if !changes.iter().any(|(k, _)| *k == key) {
                    changes.push((key, None));
                }
            }
            let (error_code, message) = match apply(
                broker,
                r.resource_type,
                &name,
                changes,
                request.validate_only,
            ) {
                Ok(()) => (NONE, None),
                Err((c, m)) => (c, Some(s(m))),
            };
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn list_type(name: &str) -> bool {
    let ty = TOPIC_CONFIGS
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.ty)
        .or_else(|| broker_config(name).map(|d| d.ty));
    matches!(ty, Some(ConfigType::List(_) | ConfigType::ReplicaList))
}

pub fn incremental_alter(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let responses = request
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let current = current_settings(broker, r.resource_type, &name);
            let mut changes: Vec<(String, Option<String>)> = Vec::new();
            let mut error: Option<(i16, String)> = None;
            for c in &r.configs {
                let key = c.name.to_string();
                let value = c.value.as_ref().map(|v| v.to_string());
                let change = match c.config_operation {
                    OP_SET => Ok(value),
                    OP_DELETE => Ok(None),
                    OP_APPEND | OP_SUBTRACT if list_type(&key) => {
                        let base = current.get(&key).cloned().unwrap_or_default();
                        let mut items: Vec<String> = base
                            .split(',')
                            .filter(|i| !i.is_empty())
                            .map(str::to_string)
                            .collect();
                        for item in value
                            .unwrap_or_default()
                            .split(',')
                            .filter(|i| !i.is_empty())
                        {
                            if c.config_operation == OP_APPEND {
                                if !items.iter().any(|i| i == item) {
                                    items.push(item.to_string());
                                }
                            } else {
                                items.retain(|i| i != item);
                            }
                        }
                        Ok((!items.is_empty()).then(|| items.join(",")))
                    }
                    OP_APPEND | OP_SUBTRACT => Err(format!(
                        "'{key}' is not a list; APPEND and SUBTRACT need a list"
                    )),
                    other => Err(format!("unknown config operation {other}")),
                };
                match change {
                    Ok(v) => changes.push((key, v)),
                    Err(m) => {
                        error = Some((code(ResponseError::InvalidConfig), m));
                        break;
                    }
                }
            }
            if changes
                .iter()
                .map(|(k, _)| k)
                .collect::<std::collections::HashSet<_>>()
                .len()
                != changes.len()
            {
                error.get_or_insert((
                    code(ResponseError::InvalidRequest),
                    "a config key appears more than once".into(),
                ));
            }
            let outcome = match error {
                Some(e) => Err(e),
                None => apply(
                    broker,
                    r.resource_type,
                    &name,
                    changes,
                    request.validate_only,
                ),
            };
            let (error_code, message) = match outcome {
                Ok(()) => (NONE, None),
                Err((c, m)) => (c, Some(s(m))),
            };
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
