//! Shared pieces of the client commands: the connection arguments (`--brokers`, `-X`),
//! building a [`ClientConfig`], checking that a broker is reachable, the async runtime and
//! byte/JSON formatting helpers.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use gregor_client::ClientConfig;

/// Connection options shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT...]`.
    #[arg(
        long,
        env = "GREGOR_BROKERS",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT[,..]"
    )]
    pub brokers: String,
    /// A client property (Kafka key name), `key=value`; repeatable; e.g.
    /// `-X linger.ms=10`. Unknown keys are rejected.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub props: Vec<String>,
}

impl ConnArgs {
    /// `bootstrap.servers` from `--brokers`, then every `-X` pair, then `fixed` (the values
    /// of explicit command-line flags, which win).
    pub fn client_config(&self, fixed: &[(&str, String)]) -> Result<ClientConfig> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers.clone());
        for p in &self.props {
            let Some((k, v)) = p.split_once('=') else {
                bail!("-X '{p}' is not of the form key=value");
            };
            if k.trim().is_empty() {
                bail!("-X '{p}' has an empty key");
            }
            config.set(k, v);
        }
        for (k, v) in fixed {
            config.set(*k, v.clone());
        }
        Ok(config)
    }
}

/// Runs `f` on a fresh multi-threaded Tokio runtime (the client's sender and fetcher tasks
/// run beside the command's own loop).
pub fn block_on(f: impl Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(f)
}

/// The connect timeout: `request.timeout.ms` when set, else 5 s.
fn connect_timeout(config: &ClientConfig) -> Duration {
    let ms = config
        .get("request.timeout.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5_000);
    Duration::from_millis(ms.max(1))
}

fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::TimedOut => "timed out".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s,
            }
        }
    }
}

/// Fails with "cannot reach HOST:PORT: cause" unless at least one bootstrap broker accepts
/// a TCP connection.
pub async fn check_reachable(config: &ClientConfig) -> Result<()> {
    let servers = config.bootstrap_servers()?;
    let timeout = connect_timeout(config);
    let mut errors = Vec::new();
    for addr in &servers {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => errors.push(format!("cannot reach {addr}: {}", describe_io(&e))),
            Err(_) => errors.push(format!(
                "cannot reach {addr}: connect timed out after {} ms",
                timeout.as_millis()
            )),
        }
    }
    bail!("{}", errors.join("; "))
}

/// Parses `key=value` (a `--header`).
pub fn parse_header(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("--header '{s}' is not of the form key=value"),
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Bytes as text: UTF-8 when valid, else base64.
pub fn bytes_text(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) => s.to_string(),
        Err(_) => base64(data),
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Optional bytes as a JSON string (UTF-8 or base64) or `null`.
pub fn json_bytes(data: Option<&[u8]>) -> String {
    match data {
        Some(d) => json_str(&bytes_text(d)),
        None => "null".into(),
    }
}

/// Whether stderr is a terminal (progress output is shown only then).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn bytes_text_falls_back_to_base64() {
        assert_eq!(bytes_text(b"hello"), "hello");
        assert_eq!(bytes_text(&[0xff, 0x00]), "/wA=");
        assert_eq!(json_bytes(None), "null");
        assert_eq!(json_bytes(Some(b"a\"b")), "\"a\\\"b\"");
    }

    #[test]
    fn x_props_must_be_key_value() {
        let conn = ConnArgs {
            brokers: "h:1".into(),
            props: vec!["linger.ms=3".into()],
        };
        let c = conn.client_config(&[("acks", "1".into())]).unwrap();
        assert_eq!(c.get("linger.ms"), Some("3"));
        assert_eq!(c.get("acks"), Some("1"));
        assert_eq!(c.get("bootstrap.servers"), Some("h:1"));
        let bad = ConnArgs {
            brokers: "h:1".into(),
            props: vec!["nokey".into()],
        };
        let e = bad.client_config(&[]).unwrap_err().to_string();
        assert!(e.contains("nokey"), "{e}");
    }
}
