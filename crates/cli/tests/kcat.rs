//! Debian's kcat (built on librdkafka 2.0.2) against the `gregor` binary: an old client that
//! checks the ApiVersions v3 response strictly. `.ci/run` installs kcat; on a machine
//! without it this test fails with a message saying so rather than passing silently.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{free_port, BrokerProcess};

fn kcat(args: &[&str], input: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new("timeout")
        .arg("20")
        .arg("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (apt-get install kcat; .ci/run does this)");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kcat_produces_consumes_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = BrokerProcess::start(dir.path(), port, &[]);
    let bootstrap = format!("127.0.0.1:{port}");
    let b = bootstrap.as_str();

    let (ok, _, err) = kcat(
        &["-P", "-b", b, "-t", "kcat", "-K:"],
        Some("k1:hello\nk2:world\n:no-key\n"),
    );
    assert!(ok, "kcat produce failed: {err}");
    let (ok, out, err) = kcat(
        &["-C", "-b", b, "-t", "kcat", "-e", "-f", "%p %o %k=%s\\n"],
        None,
    );
    assert!(ok, "kcat consume failed: {err}");
    assert_eq!(out, "0 0 k1=hello\n0 1 k2=world\n0 2 =no-key\n");
    // From the last record (ListOffsets through an old client).
    let (ok, out, err) = kcat(
        &[
            "-C", "-b", b, "-t", "kcat", "-o", "-1", "-e", "-f", "%o %s\\n",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "2 no-key\n");
    let (ok, out, err) = kcat(&["-L", "-b", b, "-t", "kcat"], None);
    assert!(ok, "{err}");
    assert!(out.contains("topic \"kcat\" with 1 partitions"), "{out}");
    drop(broker);
}
