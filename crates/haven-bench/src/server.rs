//! The server under test: a `haven serve` the tool starts on a fresh data directory (SQLite, or
//! a PostgreSQL URL), set up through `haven admin` exactly as an operator would. Its resource
//! use is read from /proc.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// The password of every benchmark user.
pub const PASSWORD: &str = "orbit-kettle-plum-5521";

/// A running server.
pub struct Server {
    child: Child,
    /// Its base URL.
    pub base: String,
    data_dir: PathBuf,
    haven: PathBuf,
    database_url: Option<String>,
    env: Vec<(String, String)>,
    killed: bool,
}

impl Server {
    fn cmd(haven: &Path, data_dir: &Path, database_url: Option<&str>) -> Command {
        let mut c = Command::new(haven);
        c.env("HAVEN_DATA_DIR", data_dir);
        // The server's own log level can be raised for a look inside (its log goes to
        // `server.log` in the data directory); by default only errors are logged.
        if std::env::var_os("HAVEN_LOG_LEVEL").is_none() {
            c.env("HAVEN_LOG_LEVEL", "error");
        }
        if let Some(u) = database_url {
            c.env("HAVEN_DATABASE_URL", u);
        }
        c
    }

    /// Runs `haven admin` with `args` (and `stdin`).
    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
        let mut c = Self::cmd(&self.haven, &self.data_dir, self.database_url.as_deref());
        c.arg("admin").args(args).stdout(Stdio::null()).stderr(Stdio::piped()).stdin(Stdio::piped());
        let mut child = c.spawn().context("running haven admin")?;
        if let Some(s) = stdin {
            child.stdin.take().expect("piped").write_all(s.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("haven admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Starts `haven serve` on a free loopback port.
    pub fn start(haven: &Path, data_dir: &Path, database_url: Option<String>) -> anyhow::Result<Self> {
        Self::start_with(haven, data_dir, database_url, Vec::new())
    }

    /// Starts `haven serve` on a free loopback port with more settings in `env` (a cluster
    /// node's, say).
    pub fn start_with(
        haven: &Path,
        data_dir: &Path,
        database_url: Option<String>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        Self::start_at(haven, data_dir, database_url, "127.0.0.1:0", env)
    }

    /// Starts `haven serve` listening on `bind`.
    fn start_at(
        haven: &Path,
        data_dir: &Path,
        database_url: Option<String>,
        bind: &str,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let mut child = Self::cmd(haven, data_dir, database_url.as_deref())
            .args(["serve", "--bind", bind])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HAVEN_MESSAGING_SOCKET_QUEUE", "4096")
            .stdout(Stdio::piped())
            .stderr(
                match std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("server.log"))
                {
                    Ok(f) => Stdio::from(f),
                    Err(_) => Stdio::null(),
                },
            )
            .spawn()
            .with_context(|| format!("starting {}", haven.display()))?;
        let mut reader = BufReader::new(child.stdout.take().expect("piped"));
        let base = loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("the server exited before listening");
            }
            if let Some(addr) = line.trim().strip_prefix("Haven is listening on ") {
                break addr.to_owned();
            }
        };
        Ok(Self {
            child,
            base,
            data_dir: data_dir.to_owned(),
            haven: haven.to_owned(),
            database_url,
            env,
            killed: false,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no shutdown of any kind, as in a power cut of the
    /// process) and starts it again on the same address and data.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        // It may be dead already (killed by the sink gateway mid-send).
        self.child.kill().context("SIGKILL")?;
        self.child.wait()?;
        self.killed = true;
        let bind = self.base.trim_start_matches("http://").to_owned();
        *self =
            Self::start_at(&self.haven, &self.data_dir, self.database_url.clone(), &bind, self.env.clone())?;
        Ok(())
    }

    /// Creates the organisation (MFA not required: the tool signs in with passwords) and its
    /// clinicians, named `bench.00000`, ...
    pub fn setup(&self, org: &str, users: usize, progress: &dyn Fn(usize)) -> anyhow::Result<Vec<String>> {
        self.admin(&["create-org", "--name", org], None)?;
        self.admin(&["policy", "--org", org, "--mfa-required", "false"], None)?;
        let mut names = Vec::new();
        for i in 0..users {
            let name = format!("bench.{i:05}");
            self.create_user(org, &name, "clinician")?;
            names.push(name);
            progress(i + 1);
        }
        Ok(names)
    }

    /// Creates one user with `role`, whose password is [`PASSWORD`].
    pub fn create_user(&self, org: &str, name: &str, role: &str) -> anyhow::Result<()> {
        let pw = format!("{PASSWORD}\n");
        let args = ["create-user", "--org", org, "--username", name, "--display-name", name, "--role", role];
        self.admin(&[&args[..], &["--password-stdin"]].concat(), Some(&pw))
    }

    /// Runs another `haven` command on the server's database (e.g. `audit export`), returning
    /// its wall time in seconds.
    pub fn haven(&self, args: &[&str]) -> anyhow::Result<f64> {
        let started = std::time::Instant::now();
        let out = Self::cmd(&self.haven, &self.data_dir, self.database_url.as_deref())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running haven {args:?}"))?;
        if !out.status.success() {
            bail!("haven {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:")
    }

    /// Peak resident memory (VmHWM) in KiB and CPU time (user + system) in seconds.
    pub fn usage(&self) -> (u64, f64) {
        usage_of(self.child.id())
    }

    /// The work the server has done so far: CPU time and writes, for per-message figures that
    /// hold still on a machine whose speed drifts.
    pub fn work(&self) -> Work {
        Work::of(self.child.id())
    }

    /// Stops the server (SIGTERM: a clean shutdown).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Counters of the server's work (from /proc/PID/stat and /proc/PID/io).
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Write system calls (sockets and files).
    pub write_calls: u64,
    /// Bytes passed to write system calls (sockets and files).
    pub bytes_written: u64,
    /// Bytes sent to the storage layer (the disk, once written back).
    pub disk_bytes: u64,
}

impl Work {
    /// The work process `pid` has done so far (zeros for what cannot be read).
    pub fn of(pid: u32) -> Self {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let field = |name: &str| {
            io.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok()).unwrap_or(0)
        };
        Work {
            cpu_seconds: cpu_seconds(pid),
            write_calls: field("syscw:"),
            bytes_written: field("wchar:"),
            disk_bytes: field("write_bytes:"),
        }
    }

    /// The work done between `earlier` and `self`, per unit of `n` things done.
    pub fn per(&self, earlier: &Work, n: usize) -> serde_json::Value {
        let n = n.max(1) as f64;
        serde_json::json!({
            "cpu_us": (self.cpu_seconds - earlier.cpu_seconds) * 1e6 / n,
            "write_calls": self.write_calls.saturating_sub(earlier.write_calls) as f64 / n,
            "bytes_written": self.bytes_written.saturating_sub(earlier.bytes_written) as f64 / n,
            "disk_bytes": self.disk_bytes.saturating_sub(earlier.disk_bytes) as f64 / n,
        })
    }
}

/// Sum and count of each histogram named in `names` in a Prometheus text exposition (zeros for
/// one not recorded yet).
pub fn histograms(text: &str, names: &[&str]) -> Vec<(f64, f64)> {
    names.iter().map(|n| histogram_where(text, n, &[])).collect()
}

/// (sum, count) of the Prometheus histogram `name` on the series whose labels include every one
/// of `labels` (each written `key="value"`); (0, 0) when there is none.
pub fn histogram_where(text: &str, name: &str, labels: &[&str]) -> (f64, f64) {
    (sample(text, &format!("{name}_sum"), labels), sample(text, &format!("{name}_count"), labels))
}

/// How many observations of the Prometheus histogram `name` were at most `le` (its bucket
/// `le`, written as the server writes it, e.g. "0.005"); 0 when there is none.
pub fn bucket(text: &str, name: &str, le: &str) -> f64 {
    sample(text, &format!("{name}_bucket"), &[&format!("le=\"{le}\"")])
}

/// The value of the Prometheus counter `name` (unlabelled or on its first series); 0 when there
/// is none.
pub fn counter(text: &str, name: &str) -> f64 {
    sample(text, name, &[])
}

/// The value of the first sample of `series` whose labels include every one of `labels`.
fn sample(text: &str, series: &str, labels: &[&str]) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            let (labelled, number) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|want| labelled.split(',').any(|l| l == *want))
                .then_some(number)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Peak resident memory (VmHWM) in KiB and CPU time (user + system) in seconds of process `pid`.
pub fn usage_of(pid: u32) -> (u64, f64) {
    (status_kib(pid, "VmHWM:"), cpu_seconds(pid))
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The CPU time (user + system, seconds) of the PostgreSQL servers on this machine so far: each
/// postmaster's own, its children's that it has reaped, and its live children's. None when no
/// PostgreSQL runs here. It counts whatever used the database, so a benchmark must run alone;
/// it is what a server on PostgreSQL costs beyond its own process (SQLite runs inside it).
pub fn database_cpu_seconds() -> Option<f64> {
    let procs: Vec<Proc> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(Proc::read)
        .collect();
    database_cpu_of(&procs)
}

/// A process as `/proc/<pid>/stat` tells it: its parent, name and CPU ticks (user, system, and
/// its reaped children's user and system).
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    name: String,
    ticks: [f64; 4],
}

impl Proc {
    fn read(pid: u32) -> Option<Self> {
        Self::parse(pid, &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    fn parse(pid: u32, stat: &str) -> Option<Self> {
        // The name is in parentheses and may hold anything, ')' too: it ends at the last one.
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_owned();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        // After the name: state, ppid, ..., utime, stime, cutime, cstime (fields 14 to 17).
        Some(Self { pid, ppid: n(1)? as u32, name, ticks: [n(11)?, n(12)?, n(13)?, n(14)?] })
    }
}

fn database_cpu_of(procs: &[Proc]) -> Option<f64> {
    let postgres = |p: &Proc| p.name == "postgres";
    let by_pid: std::collections::HashMap<u32, &Proc> = procs.iter().map(|p| (p.pid, p)).collect();
    let postmasters: Vec<u32> = procs
        .iter()
        .filter(|p| postgres(p) && !by_pid.get(&p.ppid).is_some_and(|parent| postgres(parent)))
        .map(|p| p.pid)
        .collect();
    if postmasters.is_empty() {
        return None;
    }
    let ticks: f64 = procs
        .iter()
        .map(|p| {
            if postmasters.contains(&p.pid) {
                p.ticks.iter().sum()
            } else if postgres(p) && postmasters.contains(&p.ppid) {
                p.ticks[0] + p.ticks[1]
            } else {
                0.0
            }
        })
        .sum();
    Some(ticks / TICKS_PER_SECOND)
}

/// This tool's own CPU time so far (user + system), seconds.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

fn cpu_seconds(pid: u32) -> f64 {
    Proc::read(pid).map_or(0.0, |p| (p.ticks[0] + p.ticks[1]) / TICKS_PER_SECOND)
}

/// The kernel's clock ticks a second in /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_cpu_is_its_postmasters_with_their_children_and_nothing_else() {
        let stat = |pid: u32, ppid: u32, name: &str, t: [u32; 4]| {
            let line = format!(
                "{pid} ({name}) S {ppid} 1 1 0 -1 4194560 0 0 0 0 {} {} {} {} 20 0 1 0",
                t[0], t[1], t[2], t[3]
            );
            Proc::parse(pid, &line).unwrap()
        };
        let procs = [
            stat(1, 0, "init", [5, 5, 900, 900]),
            // The postmaster: its own ticks and its reaped children's.
            stat(10, 1, "postgres", [100, 50, 200, 30]),
            // Live backends: their own ticks only (their reaping moves them to the parent).
            stat(11, 10, "postgres", [400, 100, 7, 7]),
            stat(12, 10, "postgres", [40, 10, 0, 0]),
            // Not PostgreSQL, even as a postmaster's child; nor a name that only contains it.
            stat(13, 10, "sh", [1000, 0, 0, 0]),
            stat(20, 1, "haven (postgres)", [1000, 1000, 0, 0]),
        ];
        let seconds = database_cpu_of(&procs).unwrap();
        assert!((seconds - (380.0 + 500.0 + 50.0) / 100.0).abs() < 1e-9, "{seconds}");
        assert!(database_cpu_of(&procs[..1]).is_none());
        assert_eq!(procs[5].name, "haven (postgres)");
    }

    const TEXT: &str = r#"# TYPE haven_store_send_seconds summary
haven_store_send_seconds_sum 1.5
haven_store_send_seconds_count 300
http_request_duration_seconds_sum{method="GET",route="/api/v1/conversations/{id}/messages"} 9
http_request_duration_seconds_count{method="GET",route="/api/v1/conversations/{id}/messages"} 90
http_request_duration_seconds_sum{method="POST",route="/api/v1/conversations/{id}/messages"} 2.5
http_request_duration_seconds_count{method="POST",route="/api/v1/conversations/{id}/messages"} 500
"#;

    #[test]
    fn histograms_are_read_by_name_and_by_labels() {
        assert_eq!(histograms(TEXT, &["haven_store_send_seconds", "absent"]), vec![(1.5, 300.0), (0.0, 0.0)]);
        let post = histogram_where(
            TEXT,
            "http_request_duration_seconds",
            &[r#"method="POST""#, r#"route="/api/v1/conversations/{id}/messages""#],
        );
        assert_eq!(post, (2.5, 500.0));
        // A label that no series has matches nothing, not the first series of the name.
        assert_eq!(histogram_where(TEXT, "http_request_duration_seconds", &[r#"method="PUT""#]), (0.0, 0.0));
        // A longer name sharing the prefix is not taken for this one.
        assert_eq!(histograms(TEXT, &["haven_store_send"]), vec![(0.0, 0.0)]);
    }

    #[test]
    fn a_bucket_is_read_by_its_bound() {
        let text = r#"haven_store_group_commit_seconds_bucket{le="0.001"} 40
haven_store_group_commit_seconds_bucket{le="0.0025"} 70
haven_store_group_commit_seconds_bucket{le="0.005"} 95
haven_store_group_commit_seconds_bucket{le="+Inf"} 100
"#;
        assert_eq!(bucket(text, "haven_store_group_commit_seconds", "0.0025"), 70.0);
        assert_eq!(bucket(text, "haven_store_group_commit_seconds", "0.005"), 95.0);
        // Not the bucket whose bound merely starts the same way, nor another histogram's.
        assert_eq!(bucket(text, "haven_store_group_commit_seconds", "0.00"), 0.0);
        assert_eq!(bucket(text, "haven_store_send_seconds", "0.005"), 0.0);
    }
}
