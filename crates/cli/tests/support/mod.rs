//! Test support for the `gregor` binary run as a separate process: a free port, and a
//! broker process that is killed (and reaped) when its guard drops, on every path, a failing
//! assertion included, so no test leaves a broker running.

#![allow(dead_code)]

pub mod cluster;
pub mod elect;
pub mod http;
pub mod raw;
pub mod replicated;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// Longest wait for a broker's "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where test ports come from: below Linux's ephemeral range (32768–60999), so no outgoing
/// connection of a parallel test can take a port between its pick and the broker's bind (a
/// port taken so made a broker exit at start in CI).
const TEST_PORTS: std::ops::Range<u16> = 12_000..32_000;

/// A port free on 127.0.0.1 right now and handed out to no other caller in this process.
pub fn free_port() -> u16 {
    free_base(&[0])
}

/// A base port `b` with every `b + offset` free on 127.0.0.1 right now and none handed out
/// to another caller in this process; processes start at different points of the range (by
/// pid).
pub fn free_base(offsets: &[u16]) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let widest = offsets.iter().copied().max().unwrap_or(0);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start - widest);
    let start = std::process::id().wrapping_mul(7919) % span;
    loop {
        let n = NEXT.fetch_add(u32::from(widest) + 1, Ordering::Relaxed);
        assert!(n < span, "no free test ports left in {TEST_PORTS:?}");
        let base = TEST_PORTS.start + ((start + n) % span) as u16;
        if offsets
            .iter()
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok())
        {
            return base;
        }
    }
}

/// Where a test broker with data in `dir` writes its stderr.
pub fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join("broker.stderr")
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
        BrokerProcess::spawn_limited(dir, port, overrides, None)
    }

    /// [`BrokerProcess::start`] with the broker's open-file limit (soft and hard) set to
    /// `nofile`.
    pub fn start_with_nofile(
        dir: &Path,
        port: u16,
        overrides: &[&str],
        nofile: u64,
    ) -> BrokerProcess {
        let mut broker = BrokerProcess::spawn_limited(dir, port, overrides, Some(nofile));
        broker.wait_listening();
        broker
    }

    fn spawn_limited(
        dir: &Path,
        port: u16,
        overrides: &[&str],
        nofile: Option<u64>,
    ) -> BrokerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gregor"));
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; the closure touches only its copy.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd.arg("broker")
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{port}"))
            .arg("--override")
            .arg(format!("log.dirs={}", dir.display()));
        for o in overrides {
            cmd.arg("--override").arg(o);
        }
        // The broker's log goes into its data directory (removed with the test's temporary
        // directory; the broker ignores files there), for a failing test to be looked into;
        // a restarted broker appends to it, so every incarnation's log is there.
        let _ = std::fs::create_dir_all(dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(dir))
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
                "broker on port {} printed nothing within {START_TIMEOUT:?} ({e}); its log ends:\n{}",
                self.port,
                self.log_tail()
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

    /// The last lines of the broker's stderr log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(log_path(Path::new(&self.dir))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
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
