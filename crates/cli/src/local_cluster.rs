//! `gregor local-cluster`: a development and test cluster on this machine in one command.
//!
//! `up` starts N `gregor broker` processes on 127.0.0.1, each both broker and controller,
//! in the background: node `i` serves clients on `base-port + i - 1` and the quorum on
//! `base-port + 100 + i - 1` (metrics and health on `base-port + 200 + i - 1`), with data under `DIR/node-<i>/data`, its output in
//! `DIR/node-<i>/broker.log` and its pid in `DIR/node-<i>/pid`. The layout is kept in
//! `DIR/cluster.json`, so `status`, `stop`, `kill`, `start` and `down` work from any shell
//! given the same `--dir`. Every wait is bounded; a node that does not come up is reported
//! with the end of its log and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::common::{print_json, table, FormatArg, OutputFormat};

/// How long a node gets to start serving, or to exit after a signal.
const NODE_WAIT: Duration = Duration::from_secs(30);
/// The quorum ports are this far above the client ports.
const CONTROLLER_PORT_OFFSET: u16 = 100;
/// The metrics and health ports (`metrics.listener`) are this far above the client ports.
const METRICS_PORT_OFFSET: u16 = 200;

#[derive(Subcommand)]
pub enum LocalClusterCommand {
    /// Start N nodes in the background and wait until every one serves.
    Up(UpArgs),
    /// Each node's id, addresses, pid and whether it is alive.
    Status(StatusArgs),
    /// Stop one node (SIGTERM: a clean shutdown) and wait for it to exit.
    Stop(NodeArgs),
    /// Kill one node (SIGKILL) and wait for it to exit.
    Kill(NodeArgs),
    /// Start one stopped node again with its own config and data.
    Start(NodeArgs),
    /// Stop every node.
    Down(DirArg),
}

#[derive(Args)]
pub struct DirArg {
    /// Where the cluster's data, logs and pids live.
    #[arg(long, default_value = "./gregor-cluster")]
    pub dir: PathBuf,
}

#[derive(Args)]
pub struct UpArgs {
    /// Number of nodes (each both broker and controller).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Client port of node 1; node i uses base-port + i - 1, its quorum port 100 above, its
    /// metrics and health port 200 above.
    #[arg(long, default_value_t = 19092)]
    pub base_port: u16,
    /// A broker config `key=value` given to every node; repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[command(flatten)]
    pub dir: DirArg,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Args)]
pub struct NodeArgs {
    /// The node's id.
    pub id: u16,
    #[command(flatten)]
    pub dir: DirArg,
}

/// The cluster's layout, as `cluster.json` keeps it.
struct Layout {
    dir: PathBuf,
    nodes: u16,
    base_port: u16,
    overrides: Vec<String>,
}

impl Layout {
    fn load(dir: &Path) -> Result<Layout> {
        let path = dir.join("cluster.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no local cluster in {} (run `gregor local-cluster up` first)",
                dir.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a cluster description", path.display()))?;
        let num = |k: &str| {
            v[k].as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| anyhow!("{}: missing '{k}'", path.display()))
        };
        Ok(Layout {
            dir: dir.to_path_buf(),
            nodes: num("nodes")?,
            base_port: num("base_port")?,
            overrides: v["overrides"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|o| o.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    fn save(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let v =
            json!({"nodes": self.nodes, "base_port": self.base_port, "overrides": self.overrides});
        std::fs::write(
            self.dir.join("cluster.json"),
            serde_json::to_vec_pretty(&v)?,
        )?;
        Ok(())
    }

    fn ids(&self) -> impl Iterator<Item = u16> {
        1..=self.nodes
    }

    fn check_id(&self, id: u16) -> Result<()> {
        if id == 0 || id > self.nodes {
            bail!(
                "node {id} is not in this cluster (nodes 1 to {})",
                self.nodes
            );
        }
        Ok(())
    }

    fn port(&self, id: u16) -> u16 {
        self.base_port + id - 1
    }

    fn controller_port(&self, id: u16) -> u16 {
        self.base_port + CONTROLLER_PORT_OFFSET + id - 1
    }

    /// Node `id`'s metrics and health endpoint (`metrics.listener`).
    fn metrics_port(&self, id: u16) -> u16 {
        self.base_port + METRICS_PORT_OFFSET + id - 1
    }

    fn node_dir(&self, id: u16) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    fn voters(&self) -> String {
        self.ids()
            .map(|id| format!("{id}@127.0.0.1:{}", self.controller_port(id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn bootstrap(&self) -> String {
        self.ids()
            .map(|id| format!("127.0.0.1:{}", self.port(id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The pid of node `id` if it is running.
    fn live_pid(&self, id: u16) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.node_dir(id).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Starts node `id` in the background, in a process group of its own (a Ctrl-C in this
    /// shell does not reach it).
    fn spawn(&self, id: u16) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let dir = self.node_dir(id);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("broker.log"))?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("broker");
        let mut overrides = vec![
            format!("node.id={id}"),
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                self.port(id),
                self.controller_port(id)
            ),
            format!("controller.quorum.voters={}", self.voters()),
            format!("log.dirs={}", dir.join("data").display()),
            format!(
                "metrics.listener=http://127.0.0.1:{}",
                self.metrics_port(id)
            ),
        ];
        overrides.extend(self.overrides.iter().cloned());
        for o in &overrides {
            cmd.arg("--override").arg(o);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        std::fs::write(dir.join("pid"), child.id().to_string())?;
        Ok(())
    }

    /// Waits until node `id` prints that it listens; the end of its log if it does not.
    fn wait_serving(&self, id: u16, deadline: Instant) -> Result<()> {
        let log = self.node_dir(id).join("broker.log");
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(());
            }
            if self.live_pid(id).is_none() || Instant::now() >= deadline {
                // The broker's own error line if it printed one, else the end of its log.
                let reason = match text.lines().find(|l| l.starts_with("Error:")) {
                    Some(line) => line.to_string(),
                    None => {
                        let tail: Vec<&str> = text.lines().rev().take(5).collect();
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    }
                };
                let how = if self.live_pid(id).is_none() {
                    ", it exited"
                } else {
                    " in time"
                };
                bail!(
                    "node {id} did not come up{how} (log: {}): {reason}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to node `id` and waits until it is gone.
    fn signal_and_wait(&self, id: u16, signal: i32) -> Result<()> {
        let Some(pid) = self.live_pid(id) else {
            bail!("node {id} is not running");
        };
        // SAFETY: kill(2) with a pid this cluster started and recorded.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + NODE_WAIT;
        while alive(pid) {
            if Instant::now() >= deadline {
                bail!("node {id} (pid {pid}) did not exit within {NODE_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name in parentheses.
    !stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

pub fn run(command: LocalClusterCommand) -> Result<ExitCode> {
    match command {
        LocalClusterCommand::Up(a) => up(a),
        LocalClusterCommand::Status(a) => status(a),
        LocalClusterCommand::Stop(a) => {
            let layout = Layout::load(&a.dir.dir)?;
            layout.check_id(a.id)?;
            layout.signal_and_wait(a.id, libc::SIGTERM)?;
            println!("node {} stopped", a.id);
            Ok(ExitCode::SUCCESS)
        }
        LocalClusterCommand::Kill(a) => {
            let layout = Layout::load(&a.dir.dir)?;
            layout.check_id(a.id)?;
            layout.signal_and_wait(a.id, libc::SIGKILL)?;
            println!("node {} killed", a.id);
            Ok(ExitCode::SUCCESS)
        }
        LocalClusterCommand::Start(a) => {
            let layout = Layout::load(&a.dir.dir)?;
            layout.check_id(a.id)?;
            if layout.live_pid(a.id).is_some() {
                bail!("node {} is already running", a.id);
            }
            layout.spawn(a.id)?;
            layout.wait_serving(a.id, Instant::now() + NODE_WAIT)?;
            println!("node {} serving on 127.0.0.1:{}", a.id, layout.port(a.id));
            Ok(ExitCode::SUCCESS)
        }
        LocalClusterCommand::Down(a) => {
            let layout = Layout::load(&a.dir)?;
            for id in layout.ids() {
                if layout.live_pid(id).is_some() {
                    layout.signal_and_wait(id, libc::SIGTERM)?;
                }
            }
            println!("local cluster in {} is down", layout.dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn up(a: UpArgs) -> Result<ExitCode> {
    if a.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let top = u32::from(a.base_port) + u32::from(METRICS_PORT_OFFSET) + u32::from(a.nodes);
    if a.base_port == 0 || top > u32::from(u16::MAX) {
        bail!(
            "--base-port {} leaves no room for {} nodes",
            a.base_port,
            a.nodes
        );
    }
    for o in &a.overrides {
        if !o.contains('=') {
            bail!("--override '{o}' is not key=value");
        }
    }
    if let Ok(existing) = Layout::load(&a.dir.dir) {
        if let Some(id) = existing.ids().find(|id| existing.live_pid(*id).is_some()) {
            bail!(
                "node {id} of the cluster in {} is still running (`gregor local-cluster down --dir {}` first)",
                a.dir.dir.display(),
                a.dir.dir.display()
            );
        }
    }
    let layout = Layout {
        dir: a.dir.dir,
        nodes: a.nodes,
        base_port: a.base_port,
        overrides: a.overrides,
    };
    layout.save()?;
    for id in layout.ids() {
        layout.spawn(id)?;
    }
    // The nodes elect a controller among themselves; each serves once it registered.
    let deadline = Instant::now() + NODE_WAIT;
    for id in layout.ids() {
        if let Err(e) = layout.wait_serving(id, deadline) {
            for other in layout.ids() {
                let _ = layout.signal_and_wait(other, libc::SIGKILL);
            }
            return Err(e.context("the local cluster did not come up; every node was stopped"));
        }
    }
    println!(
        "local cluster of {} nodes up in {}",
        layout.nodes,
        layout.dir.display()
    );
    println!("bootstrap servers: {}", layout.bootstrap());
    Ok(ExitCode::SUCCESS)
}

fn status(a: StatusArgs) -> Result<ExitCode> {
    let layout = Layout::load(&a.dir.dir)?;
    let rows: Vec<(u16, Option<i32>)> = layout.ids().map(|id| (id, layout.live_pid(id))).collect();
    match a.format.format {
        OutputFormat::Json => print_json(&json!({
            "dir": layout.dir.display().to_string(),
            "bootstrap": layout.bootstrap(),
            "nodes": rows.iter().map(|(id, pid)| json!({
                "id": id,
                "address": format!("127.0.0.1:{}", layout.port(*id)),
                "controller_address": format!("127.0.0.1:{}", layout.controller_port(*id)),
                "roles": "broker,controller",
                "pid": pid,
                "alive": pid.is_some(),
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|(id, pid)| {
                    vec![
                        id.to_string(),
                        format!("127.0.0.1:{}", layout.port(*id)),
                        format!("127.0.0.1:{}", layout.controller_port(*id)),
                        "broker,controller".into(),
                        pid.map_or("-".into(), |p| p.to_string()),
                        if pid.is_some() { "yes" } else { "no" }.into(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "ADDRESS", "CONTROLLER", "ROLES", "PID", "ALIVE"],
                    &rows
                )
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
