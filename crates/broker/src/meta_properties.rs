//! `meta.properties`, the data directory's identity card (as in Kafka): which cluster and
//! which node the data belongs to. Written once, when a node first learns its cluster's id;
//! checked at every start, so a directory is never opened by another node or cluster.

use std::path::Path;

use crate::broker::BrokerError;

/// The `cluster.id` of `meta.properties`, if the data directory has one. A directory
/// formatted for another `node.id` is refused: its partitions and votes belong to that node.
pub fn read(dir: &Path, node_id: i32) -> Result<Option<String>, BrokerError> {
    let path = dir.join("meta.properties");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BrokerError::Io {
                context: format!("meta.properties at {}", path.display()),
                source,
            })
        }
    };
    let props = crate::config::parse_properties(&text);
    let get = |key: &str| props.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    if let Some(recorded) = get("node.id") {
        if recorded.trim() != node_id.to_string() {
            return Err(BrokerError::Start(format!(
                "the data directory {} was formatted for node.id {}, but this node is node.id {node_id}: give each node its own log.dirs",
                dir.display(),
                recorded.trim()
            )));
        }
    }
    Ok(get("cluster.id"))
}

/// Writes `meta.properties` (temporary file, then rename).
pub fn write(dir: &Path, cluster_id: &str, node_id: i32) -> Result<(), BrokerError> {
    let path = dir.join("meta.properties");
    let io = |source| BrokerError::Io {
        context: format!("meta.properties at {}", path.display()),
        source,
    };
    let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Kafka prints cluster ids as URL-safe base64 without padding (22 characters).
pub fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_ids_are_22_url_safe_chars() {
        let id = super::base64_url(&[0xff; 16]);
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
