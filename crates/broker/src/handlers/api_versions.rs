//! ApiVersions: what the broker implements, straight from the version table.

use bytes::Bytes;
use gregor_protocol::versions::SUPPORTED;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use super::wire::NONE;

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|r| {
            ApiVersion::default()
                .with_api_key(r.key as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect()
}

/// The `transaction.version` feature level Gregor runs at: 2 is KIP-890 part 2 (EndTxn v5
/// bumps the epoch at every transaction end; Produce v12 adds partitions implicitly), which
/// clients that know the feature switch to.
const TRANSACTION_VERSION: i16 = 2;

pub fn handle(_request: &ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    let response = ApiVersionsResponse::default()
        .with_error_code(NONE)
        .with_api_keys(api_list());
    if version < 3 {
        return response;
    }
    let feature = || StrBytes::from_static_str("transaction.version");
    // Before v4, features whose lowest supported level is 0 are not listed as supported.
    let supported = if version >= 4 {
        vec![SupportedFeatureKey::default()
            .with_name(feature())
            .with_min_version(0)
            .with_max_version(TRANSACTION_VERSION)]
    } else {
        Vec::new()
    };
    response
        .with_supported_features(supported)
        .with_finalized_features_epoch(0)
        .with_finalized_features(vec![FinalizedFeatureKey::default()
            .with_name(feature())
            .with_min_version_level(TRANSACTION_VERSION)
            .with_max_version_level(TRANSACTION_VERSION)])
}

/// The answer to an ApiVersions request of a version the broker does not know: a v0
/// response with UNSUPPORTED_VERSION and the supported list, so the client can retry.
pub fn unsupported_version_response(correlation_id: i32) -> Bytes {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list());
    crate::dispatch::encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(body),
    )
    .expect("an ApiVersions v0 response always encodes")
}
