//! Test support for the `gregor` binary run as a separate process: a free port, and a
//! broker process that is killed (and reaped) when its guard drops, on every path, a failing
//! assertion included, so no test leaves a broker running.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `gregor broker` process started by the test; SIGKILLed when dropped.
pub struct BrokerProcess {
    child: Child,
    /// Kept open so the broker never writes to a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
    pub port: u16,
    dir: String,
}

impl BrokerProcess {
    /// Starts the broker on `port` with data in `dir` and `--override`s, and waits for its
    /// "listening" line, which must name the port and the data directory.
    pub fn start(dir: &Path, port: u16, overrides: &[&str]) -> BrokerProcess {
        let mut broker = BrokerProcess::spawn(dir, port, overrides);
        broker.wait_listening();
        broker
    }

    /// Starts the broker without waiting for it (cluster nodes wait for each other).
    pub fn spawn(dir: &Path, port: u16, overrides: &[&str]) -> BrokerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gregor"));
        cmd.arg("broker")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
            .arg("--override")
            .arg(format!("log.dirs={}", dir.display()));
        for o in overrides {
            cmd.arg("--override").arg(o);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gregor broker");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        BrokerProcess {
            child,
            _stdout: lines,
            port,
            dir: dir.display().to_string(),
        }
    }

    /// Waits for the "listening" line, which must name the port and the data directory.
    pub fn wait_listening(&mut self) {
        let first = self._stdout.next().and_then(|l| l.ok()).unwrap_or_default();
        assert!(
            first.contains(&format!("listening on 127.0.0.1:{}", self.port)),
            "{first}"
        );
        assert!(
            first.contains(&self.dir),
            "prints where data lives: {first}"
        );
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then reap the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
