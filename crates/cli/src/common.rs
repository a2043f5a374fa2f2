//! Shared pieces of the client commands: the connection arguments (`--brokers`, `-X`),
//! building a [`ClientConfig`], checking that a broker is reachable, the async runtime and
//! byte/JSON formatting helpers.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use gregor_client::{AdminClient, AdminError, ClientConfig};

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

/// Output format of the read-only admin commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables.
    Text,
    /// One JSON document.
    Json,
}

/// `--format` of the admin read commands.
#[derive(Args, Debug, Clone)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// An admin client for `conn` after checking that a broker is reachable.
pub async fn admin_client(conn: &ConnArgs) -> Result<AdminClient> {
    let config = conn.client_config(&[])?;
    let admin = AdminClient::new(&config)?;
    check_reachable(&config).await?;
    Ok(admin)
}

/// The Kafka error name (`TOPIC_ALREADY_EXISTS`) behind an error from the client, if any.
pub fn kafka_error_name(e: &anyhow::Error) -> Option<String> {
    if let Some(a) = e.downcast_ref::<AdminError>() {
        return Some(a.name.clone());
    }
    e.downcast_ref::<gregor_client::Error>()
        .and_then(|c| c.response_error())
        .map(gregor_client::admin::error_name)
}

/// A table with left-aligned columns separated by two spaces (no trailing blanks).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let w = widths.get(i).copied().unwrap_or(0);
            for _ in cell.chars().count()..w {
                line.push(' ');
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Node ids as `1,2,3`.
pub fn id_list(ids: &[i32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints a JSON value (pretty) followed by a newline.
/// `topic-partition` pairs joined by commas, or `-` when there are none (table cells).
pub fn partition_list(partitions: &[(String, i32)]) -> String {
    if partitions.is_empty() {
        return "-".into();
    }
    partitions
        .iter()
        .map(|(t, p)| format!("{t}-{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Parses `key=value` for `what` (an option name).
pub fn parse_kv(what: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("{what} '{s}' is not of the form key=value"),
    }
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
    fn tables_are_aligned() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xyz".into(), "1".into()], vec!["q".into(), "".into()]],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq\n");
        assert_eq!(id_list(&[1, 2]), "1,2");
        assert!(parse_kv("--config", "a").is_err());
        assert_eq!(
            parse_kv("--config", "a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
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
