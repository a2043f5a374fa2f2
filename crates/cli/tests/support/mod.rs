//! Test support for the `gregor` binary run as a separate process: a free port, and a
//! broker process that is killed (and reaped) when its guard drops, on every path, a failing
//! assertion included, so no test leaves a broker running.

#![allow(dead_code)]

pub mod cluster;
pub mod replicated;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// Longest wait for a broker's "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// The broker's stdout lines, read by a thread that drains the pipe until it closes (so
    /// the broker never blocks on, or writes to, a closed pipe).
    stdout: Receiver<String>,
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
        // The broker's log goes next to its data directory (removed with the test's
        // temporary directory), for a failing test to be looked into; a restarted broker
        // appends to it, so every incarnation's log is there.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("stderr"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn gregor broker");
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        BrokerProcess {
            child,
            stdout,
            port,
            dir: dir.display().to_string(),
        }
    }

    /// Waits for the "listening" line, which must name the port and the data directory.
    pub fn wait_listening(&mut self) {
        let first = match self.stdout.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!(
                "broker on port {} printed nothing within {START_TIMEOUT:?}: {e}",
                self.port
            ),
        };
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

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to this broker only.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this guard owns and has not reaped.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// SIGTERM (a clean shutdown), then waits for the exit: SIGKILL after 30 s.
    pub fn terminate(&mut self) {
        self.signal(libc::SIGTERM);
        if self.wait_exit(Duration::from_secs(30)).is_none() {
            panic!(
                "broker on port {} did not stop within 30 s of SIGTERM",
                self.port
            );
        }
    }

    /// Waits up to `timeout` for the process to exit; its status, or None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) process dies of SIGKILL too.
        self.kill();
    }
}
