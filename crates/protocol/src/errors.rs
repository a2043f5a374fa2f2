//! Kafka's names for its error codes, as its clients and tools print them.

use kafka_protocol::error::ResponseError;

/// `TopicAlreadyExists` → `TOPIC_ALREADY_EXISTS`; a code the codec does not know is
/// `UNKNOWN_ERROR_CODE_<n>`.
pub fn error_name(e: ResponseError) -> String {
    if let ResponseError::Unknown(code) = e {
        return format!("UNKNOWN_ERROR_CODE_{code}");
    }
    let camel = format!("{e:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The name of error `code` (`NONE` for 0).
pub fn code_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => error_name(e),
        None => "NONE".to_string(),
    }
}
