//! Scenario `connections`: idle authenticated WebSockets opened in steps, up to a limit. At each
//! step the tool reads the server's resident memory and runs a light message stream between two
//! other users (open loop), reporting memory per socket and the stream's delivery latency.
//!
//! Sockets come from many loopback source addresses (127.0.0.2, 127.0.0.3, ...), since one
//! source address has only about 28,000 ephemeral ports towards one server port. The tool raises
//! its file-descriptor limit (and so the server's, which it starts) as far as it may.
//!
//! One process may hold only so many sockets (open files; 20,000 on the project's machines). With
//! `--nodes N` the tool starts N Haven nodes on one PostgreSQL database, joined by NATS, spreads
//! the idle sockets over them, and sends the light stream on the first node to a socket on the
//! last, so that its deliveries cross the bus; sockets beyond its own limit are held by child
//! processes of the tool (`haven-bench hold`). Memory per socket is then the nodes' together.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::server::Server;
use crate::{Ctx, bar, percentiles, report};

/// Sockets per loopback source address: well below the ephemeral port range (28,232 ports by
/// default), which sockets of an earlier run still hold in TIME_WAIT for a minute. At 20,000
/// per address, opening slowed past 12,000 sockets (to about 180 a second) and a few sockets
/// were closed by the server before their first frame, which it waits 10 seconds for; most
/// likely each bind's search for a free port in a nearly full range. At 4,000, 18,000 sockets
/// opened with 16,000 of an earlier run in TIME_WAIT.
const PER_SOURCE: usize = 4_000;
/// Sockets being opened at once.
const PARALLEL: usize = 128;

/// Sockets one holder process keeps open (its open-file limit is the tool's).
const PER_HOLDER: usize = 15_000;

/// Parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionsArgs {
    /// Open sockets up to this many.
    #[arg(long, default_value_t = 50_000)]
    max: usize,
    /// Sockets added per step.
    #[arg(long, default_value_t = 10_000)]
    step: usize,
    /// Users the idle sockets belong to (signed in once each; their sockets share the session).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Messages of the light stream at each step.
    #[arg(long, default_value_t = 500)]
    stream_messages: usize,
    /// The light stream's rate, messages per second.
    #[arg(long, default_value_t = 50.0)]
    stream_rate: f64,
    /// Haven nodes on the one PostgreSQL database (`--database-url`), joined by NATS: the idle
    /// sockets are spread over them, and the light stream is sent on the first and received on
    /// the last, so its deliveries cross the bus. For more sockets than one process may hold.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Hold the idle sockets in child processes of the tool, this many each (default: in the
    /// tool itself while its open-file limit allows, else 15,000 per child).
    #[arg(long)]
    per_process: Option<usize>,
    /// The NATS server the nodes join (with `--nodes` above 1).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

impl ConnectionsArgs {
    /// Refuses what cannot run, before any server starts.
    fn check(&self, postgres: bool, fd_limit: u64) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.step >= 1 && self.max >= self.step,
            "--step must be at least 1 and at most --max"
        );
        anyhow::ensure!(self.users >= 1, "--users must be at least 1");
        anyhow::ensure!(self.nodes >= 1, "--nodes must be at least 1");
        anyhow::ensure!(self.per_process != Some(0), "--per-process must be at least 1");
        anyhow::ensure!(
            self.nodes == 1 || postgres,
            "--nodes above 1 needs --database-url: the nodes share one PostgreSQL database"
        );
        let per_node = self.max.div_ceil(self.nodes) as u64;
        if fd_limit < per_node + 1_000 {
            bail!(
                "the open-file limit is {fd_limit}, too low for {per_node} sockets in one server process: \
                 run as root, raise it, or spread them over more --nodes"
            );
        }
        Ok(())
    }
}

/// Raises the soft and, when permitted (root), the hard limit on open files.
fn raise_fd_limit(want: u64) -> u64 {
    if rlimit::setrlimit(rlimit::Resource::NOFILE, want, want).is_err() {
        let _ = rlimit::increase_nofile_limit(want);
    }
    rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(0)
}

/// Opens one idle socket from `source`, resumed without backfill; the task keeps reading (so
/// pings are answered) until the socket closes.
async fn idle_socket(server: SocketAddr, source: Ipv4Addr, token: &str) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.bind(SocketAddr::new(source.into(), 0))?;
    let stream = tcp.connect(server).await?;
    let mut req = format!("ws://{server}/api/v1/ws").into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    // Small buffers: the tool holds as many sockets as the server.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await?;
    crate::chat::resume_live(&mut ws).await?;
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    Ok(())
}

/// Opens the idle sockets numbered `range` (socket `i` from the `i / PER_SOURCE`-th loopback
/// source address, as user `i mod tokens`), each to `server_of(i)`.
async fn open_sockets(
    server_of: impl Fn(usize) -> SocketAddr,
    tokens: &[String],
    range: Range<usize>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let opened: Vec<(usize, anyhow::Result<()>)> = futures_util::stream::iter(range)
        .map(|i| {
            let source = Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8);
            let (server, token) = (server_of(i), &tokens[i % tokens.len()]);
            async move {
                let r = idle_socket(server, source, token).await;
                bar.inc(1);
                (i, r)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    match opened.into_iter().find(|(_, r)| r.is_err()) {
        Some((i, Err(e))) => Err(e.context(format!("opening socket number {} failed", i + 1))),
        _ => Ok(()),
    }
}

/// What a holder process is asked to open.
#[derive(serde::Serialize, serde::Deserialize)]
struct HoldJob {
    server: SocketAddr,
    tokens: Vec<String>,
    first: usize,
    count: usize,
}

/// `hold`: reads a [`HoldJob`] line on stdin, opens its sockets, says `opened` on stdout, and
/// keeps them until stdin closes.
pub fn hold(ctx: &Ctx) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let job: HoldJob = serde_json::from_str(&line).context("not a job for a holder")?;
    raise_fd_limit(job.count as u64 * 2 + 1_000);
    let hidden = indicatif::ProgressBar::hidden();
    let range = job.first..job.first + job.count;
    ctx.rt.block_on(open_sockets(|_| job.server, &job.tokens, range, &hidden))?;
    println!("opened {}", job.count);
    std::io::stdout().flush()?;
    // The sockets are tasks of this runtime: run it until the scenario is done with them.
    let (closed, done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let _ = ctx.rt.block_on(done);
    Ok(())
}

/// A holder process and its stdin, whose end tells it to let go; killed when dropped.
struct Holder(Child, Option<ChildStdin>);

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.1.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a holder of `job`'s sockets.
fn spawn_holder(job: &HoldJob) -> anyhow::Result<(Holder, BufReader<ChildStdout>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a holder of sockets")?;
    let mut stdin = child.stdin.take().expect("piped");
    let out = BufReader::new(child.stdout.take().expect("piped"));
    stdin.write_all(format!("{}\n", serde_json::to_string(job)?).as_bytes())?;
    Ok((Holder(child, Some(stdin)), out))
}

/// Runs the scenario.
pub fn run(ctx: &Ctx, a: &ConnectionsArgs) -> anyhow::Result<()> {
    let limit = raise_fd_limit(a.max as u64 * 2 + 10_000);
    a.check(ctx.database_url.is_some(), limit)?;
    let outcome = start_nodes(ctx, a).and_then(|servers| measure(ctx, &servers, a, limit));
    ctx.cleanup();
    let steps = outcome?;
    let across = if a.nodes > 1 { format!(" across {} nodes", a.nodes) } else { String::new() };
    println!("connections on {}{across}: up to {} idle sockets in steps of {}", ctx.backend(), a.max, a.step);
    for s in &steps {
        println!(
            "  {:>6} sockets: server RSS {:.1} MiB, {:.1} KiB per socket; stream delivery p99 {} ms ({} missing)",
            s["sockets"],
            s["server_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
            s["rss_kib_per_socket"].as_f64().unwrap_or(0.0),
            s["delivery_latency"]["p99_ms"],
            s["missing"]
        );
    }
    let params = json!({"max": a.max, "step": a.step, "users": a.users, "nodes": a.nodes,
                        "stream_messages": a.stream_messages, "stream_rate": a.stream_rate});
    report("connections", ctx.backend(), params, json!({"fd_limit": limit, "steps": steps}));
    Ok(())
}

/// Starts the server, or the nodes of a cluster (one data directory, so one set of keys, as
/// nodes sharing a volume; a NATS subject of this run's own).
fn start_nodes(ctx: &Ctx, a: &ConnectionsArgs) -> anyhow::Result<Vec<Server>> {
    if a.nodes == 1 {
        return Ok(vec![ctx.start()?]);
    }
    let env = vec![
        ("HAVEN_CLUSTER_NATS_URL".to_owned(), a.nats_url.clone()),
        ("HAVEN_CLUSTER_SUBJECT".to_owned(), format!("haven.bench.{}", std::process::id())),
    ];
    (0..a.nodes)
        .map(|_| Server::start_with(&ctx.haven, &ctx.data_dir, ctx.database_url.clone(), env.clone()))
        .collect()
}

fn measure(ctx: &Ctx, servers: &[Server], a: &ConnectionsArgs, fd_limit: u64) -> anyhow::Result<Vec<Value>> {
    let (first, last) = (&servers[0], &servers[servers.len() - 1]);
    let chat_args = crate::ChatArgs {
        users: a.users + 2,
        conversations: 1,
        members: 2,
        senders: 1,
        messages: a.stream_messages,
        rate: Some(a.stream_rate),
        listen_base: (servers.len() > 1).then(|| last.base.clone()),
    };
    let users = crate::users(ctx, first, &chat_args)?;
    let (stream_users, idle_users) = users.split_at(2);
    let tokens: Vec<String> = idle_users.iter().map(|u| u.1.clone()).collect();
    let addrs = servers
        .iter()
        .map(|s| s.base.trim_start_matches("http://").parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()
        .context("the server's address")?;
    // A first stream with no idle sockets: the baseline of memory and latency.
    let step = |sockets: usize, baseline: u64| -> anyhow::Result<(Value, u64)> {
        let mut r = crate::chat_load(ctx, first, stream_users, &chat_args)?;
        let nodes: Vec<u64> = servers.iter().map(Server::rss_kib).collect();
        let total: u64 = nodes.iter().sum();
        let per_socket =
            if sockets == 0 { 0.0 } else { total.saturating_sub(baseline) as f64 / sockets as f64 };
        // What each node counts (a stream socket whose close it has not yet seen included):
        // the holders' sockets are open, and where.
        let node_sockets: Vec<f64> = servers
            .iter()
            .map(|s| crate::server::counter(&crate::metrics(ctx, s), "haven_websockets"))
            .collect();
        let v = json!({"sockets": sockets, "server_rss_kib": total, "node_rss_kib": nodes,
                       "node_sockets": node_sockets,
                       "rss_kib_per_socket": per_socket,
                       "delivery_latency": percentiles(&mut r.delivery_us), "missing": r.missing,
                       "failed": r.failed});
        Ok((v, total))
    };
    let (baseline_step, baseline) = step(0, 0)?;
    let mut steps = vec![baseline_step];
    // The tool holds the sockets itself when it may; otherwise processes of its own do.
    let in_process = a.per_process.is_none() && a.max as u64 + 1_000 <= fd_limit;
    let per_holder = a.per_process.unwrap_or(PER_HOLDER);
    let mut holders = Vec::new();
    let mut open = 0;
    while open < a.max {
        let target = (open + a.step).min(a.max);
        let bar = bar((target - open) as u64, "sockets");
        if in_process {
            let server_of = |i: usize| addrs[i % addrs.len()];
            ctx.rt.block_on(open_sockets(server_of, &tokens, open..target, &bar))?;
        } else {
            holders.extend(open_in_holders(&addrs, &tokens, open..target, per_holder, &bar)?);
        }
        bar.finish_and_clear();
        open = target;
        // Let the servers settle before reading their memory.
        std::thread::sleep(Duration::from_secs(2));
        steps.push(step(open, baseline)?.0);
    }
    drop(holders);
    Ok(steps)
}

/// Opens the sockets numbered `range` in holder processes of at most `per_holder` each: node
/// `k` of `addrs` takes the `k`-th contiguous share. Returns the holders once all have opened.
fn open_in_holders(
    addrs: &[SocketAddr],
    tokens: &[String],
    range: Range<usize>,
    per_holder: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<Holder>> {
    let share = range.len().div_ceil(addrs.len());
    let mut started = Vec::new();
    for (k, server) in addrs.iter().enumerate() {
        let mut from = range.start + k * share;
        let end = (from + share).min(range.end);
        while from < end {
            let count = (end - from).min(per_holder);
            let job = HoldJob { server: *server, tokens: tokens.to_vec(), first: from, count };
            started.push((count, spawn_holder(&job)?));
            from += count;
        }
    }
    let mut holders = Vec::new();
    for (count, (holder, mut out)) in started {
        let mut line = String::new();
        if out.read_line(&mut line)? == 0 || !line.starts_with("opened") {
            bail!("a holder of {count} sockets failed (its error is above)");
        }
        bar.inc(count as u64);
        holders.push(holder);
    }
    Ok(holders)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: ConnectionsArgs,
    }

    fn check(args: &[&str], postgres: bool, limit: u64) -> anyhow::Result<()> {
        Cli::try_parse_from([&["connections"], args].concat())?.a.check(postgres, limit)
    }

    #[test]
    fn what_cannot_run_is_refused_before_any_server_starts() {
        // 50,000 sockets do not fit one process under a limit of 20,000 open files...
        let one = check(&[], true, 20_000).unwrap_err().to_string();
        assert!(one.contains("50000 sockets in one server process") && one.contains("--nodes"), "{one}");
        // ...but fit three nodes.
        assert!(check(&["--nodes", "3"], true, 20_000).is_ok());
        // Nodes share one PostgreSQL database.
        let sqlite = check(&["--nodes", "3"], false, 20_000).unwrap_err().to_string();
        assert!(sqlite.contains("--database-url"), "{sqlite}");
        assert!(check(&["--nodes", "0"], true, 20_000).is_err());
        assert!(check(&["--per-process", "0"], true, 100_000).is_err());
        assert!(check(&["--max", "100", "--step", "200"], true, 100_000).is_err());
    }
}
