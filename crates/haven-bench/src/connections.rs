//! Scenario `connections`: idle authenticated WebSockets opened in steps, up to a limit. At each
//! step the tool reads the server's resident memory and runs a light message stream between two
//! other users (open loop), reporting memory per socket and the stream's delivery latency.
//!
//! Sockets come from many loopback source addresses (127.0.0.2, 127.0.0.3, ...), since one
//! source address has only about 28,000 ephemeral ports towards one server port. The tool raises
//! its file-descriptor limit (and so the server's, which it starts) as far as it may.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

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
async fn idle_socket(server: SocketAddr, source: Ipv4Addr, url: String, token: String) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.bind(SocketAddr::new(source.into(), 0))?;
    let stream = tcp.connect(server).await?;
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    // Small buffers: the tool holds as many sockets as the server.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config)).await?;
    crate::chat::resume_live(&mut ws).await?;
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
    Ok(())
}

/// Runs the scenario.
pub fn run(ctx: &Ctx, a: &ConnectionsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.step >= 1 && a.max >= a.step, "--step must be at least 1 and at most --max");
    anyhow::ensure!(a.users >= 1, "--users must be at least 1");
    let limit = raise_fd_limit(a.max as u64 * 2 + 10_000);
    if limit < a.max as u64 + 1_000 {
        bail!("the open-file limit is {limit}, too low for {} sockets (run as root, or raise it)", a.max);
    }
    let server = ctx.start()?;
    let outcome = measure(ctx, &server, a);
    server.stop();
    ctx.cleanup();
    let steps = outcome?;
    println!("connections on {}: up to {} idle sockets in steps of {}", ctx.backend(), a.max, a.step);
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
    let params = json!({"max": a.max, "step": a.step, "users": a.users,
                        "stream_messages": a.stream_messages, "stream_rate": a.stream_rate});
    report("connections", ctx.backend(), params, json!({"fd_limit": limit, "steps": steps}));
    Ok(())
}

fn measure(ctx: &Ctx, server: &crate::server::Server, a: &ConnectionsArgs) -> anyhow::Result<Vec<Value>> {
    let chat_args = crate::ChatArgs {
        users: a.users + 2,
        conversations: 1,
        members: 2,
        senders: 1,
        messages: a.stream_messages,
        rate: Some(a.stream_rate),
    };
    let users = crate::users(ctx, server, &chat_args)?;
    let (stream_users, idle_users) = users.split_at(2);
    let addr: SocketAddr =
        server.base.trim_start_matches("http://").parse().context("the server's address")?;
    let url = format!("ws://{addr}/api/v1/ws");
    // A first stream with no idle sockets: the baseline of memory and latency.
    let step = |sockets: usize, baseline: u64| -> anyhow::Result<(Value, u64)> {
        let mut r = crate::chat_load(ctx, server, stream_users, &chat_args)?;
        let rss = server.rss_kib();
        let per_socket =
            if sockets == 0 { 0.0 } else { rss.saturating_sub(baseline) as f64 / sockets as f64 };
        let v = json!({"sockets": sockets, "server_rss_kib": rss, "rss_kib_per_socket": per_socket,
                       "delivery_latency": percentiles(&mut r.delivery_us), "missing": r.missing,
                       "failed": r.failed});
        Ok((v, rss))
    };
    let (first, baseline) = step(0, 0)?;
    let mut steps = vec![first];
    let mut open = 0;
    while open < a.max {
        let target = (open + a.step).min(a.max);
        let bar = bar((target - open) as u64, "sockets");
        let opened: Vec<anyhow::Result<()>> = ctx.rt.block_on(
            futures_util::stream::iter(open..target)
                .map(|i| {
                    let source = Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8);
                    let token = idle_users[i % idle_users.len()].1.clone();
                    let (url, bar) = (url.clone(), bar.clone());
                    async move {
                        let r = idle_socket(addr, source, url, token).await;
                        bar.inc(1);
                        r
                    }
                })
                .buffer_unordered(PARALLEL)
                .collect(),
        );
        bar.finish_and_clear();
        if let Some(e) = opened.into_iter().find_map(Result::err) {
            return Err(e.context(format!("opening socket number {} failed", open + 1)));
        }
        open = target;
        // Let the server settle before reading its memory.
        std::thread::sleep(Duration::from_secs(2));
        steps.push(step(open, baseline)?.0);
    }
    Ok(steps)
}
