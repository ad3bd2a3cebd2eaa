//! `haven-bench`: drives a Haven server over its public API exactly as clients would, and prints
//! a human summary plus one JSON object per run (parameters, results, machine). It starts the
//! server itself (release build recommended) on a fresh data directory, SQLite by default or
//! PostgreSQL with `--database-url`, and sets it up through `haven admin`.
//!
//! Scenarios: `chat` (closed or open loop), `audit` (appends per second under the chat load,
//! and the offline verification of a large export), `connections` (idle sockets in steps) and
//! `outbox` (queued texts to a sink gateway, across a SIGKILL if asked); `matrix` and `xmpp`
//! run the chat load against established servers (Synapse, ejabberd) for comparison, and
//! `compare` runs Haven and both of them side by side and reports the ratios. Speed targets are
//! measured here and reported, never asserted by tests.

mod audit;
mod chat;
mod compare;
mod connections;
mod established;
mod matrix;
mod outbox;
mod server;
mod sink;
mod xmpp;

use std::path::PathBuf;

/// mimalloc, as the server uses: the tool shares the machine with the server, and glibc's
/// malloc and free were a visible part of what it spent per frame read.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

/// Benchmarks for Haven.
#[derive(Debug, Parser)]
#[command(name = "haven-bench", version, about)]
struct Cli {
    /// The `haven` binary to run (default: next to this one).
    #[arg(long, global = true)]
    haven: Option<PathBuf>,
    /// Run on this PostgreSQL database (default: SQLite in a fresh directory). The database
    /// must be empty.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Keep the server's data directory here (and do not delete it) instead of a temporary one.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Group conversations with every member on a WebSocket; senders post messages.
    Chat(ChatArgs),
    /// Audit appends per second under the chat load, the export and offline verification of
    /// that log, and the verification time of a synthetic export of `--verify-entries` entries.
    Audit {
        #[command(flatten)]
        load: ChatArgs,
        /// Entries in the synthetic export whose verification is timed.
        #[arg(long, default_value_t = 1_000_000)]
        verify_entries: u64,
    },
    /// Idle authenticated WebSockets in steps: server memory per socket, and the delivery
    /// latency of a light message stream at each step.
    Connections(connections::ConnectionsArgs),
    /// Queued texts through the outbox to a sink gateway (Twilio's wire format): texts per
    /// second and duplicates, optionally across a SIGKILL of the server mid-run.
    Outbox(outbox::OutboxArgs),
    /// The chat load against a Matrix homeserver (Synapse, say: see `scripts/bench-synapse`),
    /// to compare with Haven on the same machine.
    Matrix(matrix::MatrixArgs),
    /// The chat load against an XMPP server's multi-user chat rooms (ejabberd, say: see
    /// `scripts/bench-ejabberd`), to compare with Haven on the same machine.
    Xmpp(xmpp::XmppArgs),
    /// The chat load side by side against Haven (SQLite and PostgreSQL), ejabberd (both) and
    /// Synapse, in interleaved sets, each server afresh for every run; then the medians and
    /// Haven's ratios to the others.
    Compare(compare::CompareArgs),
    /// (Used by `connections`.) Holds idle sockets for the scenario in a process of their own:
    /// one process may hold only so many open files.
    #[command(hide = true)]
    Hold,
}

/// The chat load.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Users (U).
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Conversations (R).
    #[arg(long, default_value_t = 10)]
    conversations: usize,
    /// Members per conversation (K).
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Senders per conversation (S).
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Messages in all (N).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Open loop at this many messages per second in all (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Where the members' sockets connect, when not the server the messages are sent to.
    #[arg(skip)]
    listen_base: Option<String>,
}

impl From<&ChatArgs> for chat::ChatParams {
    fn from(a: &ChatArgs) -> Self {
        Self {
            conversations: a.conversations,
            members: a.members,
            senders: a.senders,
            messages: a.messages,
            rate: a.rate,
            listen_base: a.listen_base.clone(),
        }
    }
}

impl ChatArgs {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.members >= 2 && self.members <= self.users,
            "--members must be between 2 and --users"
        );
        anyhow::ensure!(
            self.senders >= 1 && self.senders <= self.members,
            "--senders must be between 1 and --members"
        );
        anyhow::ensure!(
            self.rate.is_none_or(|r| r.is_finite() && r > 0.0),
            "--rate must be a number of messages per second above 0"
        );
        Ok(())
    }

    fn json(&self) -> Value {
        json!({"users": self.users, "conversations": self.conversations, "members": self.members,
               "senders": self.senders, "messages": self.messages, "rate": self.rate})
    }

    fn describe(&self) -> String {
        format!(
            "U={} R={} K={} S={} N={} {}",
            self.users,
            self.conversations,
            self.members,
            self.senders,
            self.messages,
            self.rate.map(|r| format!("open loop at {r}/s")).unwrap_or_else(|| "closed loop".into())
        )
    }
}

/// What every scenario needs: the binary, where the server keeps its data, the runtime.
pub struct Ctx {
    haven: PathBuf,
    data_dir: PathBuf,
    keep_data: bool,
    database_url: Option<String>,
    rt: tokio::runtime::Runtime,
}

impl Ctx {
    fn backend(&self) -> &'static str {
        if self.database_url.is_some() { "postgres" } else { "sqlite" }
    }

    fn start(&self) -> anyhow::Result<server::Server> {
        server::Server::start(&self.haven, &self.data_dir, self.database_url.clone())
    }

    fn cleanup(&self) {
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A progress bar in the tool's style.
pub fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len}").expect("template"),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Sets up `U` users on `server`; returns their (id, token) after signing in.
pub fn users(ctx: &Ctx, server: &server::Server, a: &ChatArgs) -> anyhow::Result<Vec<(String, String)>> {
    let bar = bar(a.users as u64, "users");
    let names = server.setup("Bench Clinic", a.users, &|n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    ctx.rt.block_on(chat::sign_in(&reqwest::Client::new(), &server.base, &names))
}

/// Runs the chat load with the signed-in `users`.
pub fn chat_load(
    ctx: &Ctx,
    server: &server::Server,
    users: &[(String, String)],
    a: &ChatArgs,
) -> anyhow::Result<chat::ChatResult> {
    let params = chat::ChatParams::from(a);
    let bar = bar(a.messages as u64, "messages");
    let before = (
        server.work(),
        writer_totals(ctx, server),
        server::own_cpu_seconds(),
        server::database_cpu_seconds(),
    );
    let result = ctx.rt.block_on(chat::run(chat::Api::Haven, &server.base, users, &params, &bar, || ()));
    bar.finish_and_clear();
    let mut result = result.context("the chat load failed")?;
    result.server_per_message = server.work().per(&before.0, result.accepted);
    result.tool_cpu_us_per_message =
        (server::own_cpu_seconds() - before.2) * 1e6 / result.accepted.max(1) as f64;
    result.database_cpu_us_per_message = database_cpu_per_message(before.3, result.accepted);
    let after = writer_totals(ctx, server);
    let d = |i: usize| (after[i].0 - before.1[i].0, after[i].1 - before.1[i].1);
    let ((sends, batches), (batch_s, _), (commit_s, commits)) = (d(0), d(1), d(2));
    let ((in_writer_s, writer_sends), (handler_s, requests), (sync_s, syncs)) = (d(3), d(4), d(5));
    let ((queued_s, queued), (wal_wait_s, wal_waits), (unread, _)) = (d(6), d(7), d(8));
    let (index_s, index_txs) = d(9);
    let (within_2_5ms, within_5ms) = d(10);
    result.writer = json!({
        "batches": batches,
        "mean_batch_size": sends / batches.max(1.0),
        "mean_batch_ms": batch_s * 1e3 / batches.max(1.0),
        "batches_over_2_5_ms": batches - within_2_5ms,
        "batches_over_5_ms": batches - within_5ms,
        "mean_write_and_commit_ms": commit_s * 1e3 / commits.max(1.0),
        "mean_send_in_writer_ms": in_writer_s * 1e3 / writer_sends.max(1.0),
        "mean_send_request_ms": handler_s * 1e3 / requests.max(1.0),
        "unread_batches": unread,
        "mean_send_queued_ms": queued_s * 1e3 / queued.max(1.0),
        "mean_batch_wal_wait_ms": wal_wait_s * 1e3 / wal_waits.max(1.0),
        "wal_syncs": syncs,
        "mean_wal_sync_ms": sync_s * 1e3 / syncs.max(1.0),
        "audit_index_transactions": index_txs,
        "mean_audit_index_ms": index_s * 1e3 / index_txs.max(1.0),
    });
    Ok(result)
}

/// The server's Prometheus metrics as text (empty when they cannot be read).
pub fn metrics(ctx: &Ctx, server: &server::Server) -> String {
    let text = ctx.rt.block_on(async {
        let resp = reqwest::get(format!("{}/metrics", server.base)).await.ok()?;
        resp.text().await.ok()
    });
    text.unwrap_or_default()
}

/// The group-commit writer's histograms (sum, count): batch sizes, batch times, the times of
/// each batch's last round trip (its writes and the commit), each send's time in the writer
/// (its wait and its batch), the server's time for each send request, and the fsyncs of the
/// SQLite write-ahead log that answered batches (none on PostgreSQL), each send's wait before its
/// batch began, each batch's wait for its fsync; the count of batches written without reading
/// first; the audit indexer's transactions; last, the batches that took at most 2.5 ms and at
/// most 5 ms (the histogram's buckets, as a pair).
fn writer_totals(ctx: &Ctx, server: &server::Server) -> Vec<(f64, f64)> {
    let text = metrics(ctx, server);
    let mut totals = server::histograms(
        &text,
        &[
            "haven_store_group_commit_batch_size",
            "haven_store_group_commit_seconds",
            "haven_store_group_commit_write_seconds",
            "haven_store_send_seconds",
        ],
    );
    totals.push(server::histogram_where(
        &text,
        "http_request_duration_seconds",
        &[r#"method="POST""#, r#"route="/api/v1/conversations/{id}/messages""#],
    ));
    totals.extend(server::histograms(
        &text,
        &["haven_store_wal_sync_seconds", "haven_store_send_queued_seconds", "haven_store_wal_wait_seconds"],
    ));
    // A counter, kept as (count, 1) beside the histograms.
    totals.push((server::counter(&text, "haven_store_group_commit_unread_batches_total"), 1.0));
    totals.extend(server::histograms(&text, &["haven_store_audit_index_seconds"]));
    let batches_within = |le: &str| server::bucket(&text, "haven_store_group_commit_seconds", le);
    totals.push((batches_within("0.0025"), batches_within("0.005")));
    totals
}

/// Prints what the group-commit writer did during the load.
pub fn print_writer(w: &Value) {
    println!(
        "  writer: {:.0} batches ({:.0} without reads), {:.1} sends each, {:.2} ms each, of which writes and commit {:.2} ms",
        w["batches"].as_f64().unwrap_or(0.0),
        w["unread_batches"].as_f64().unwrap_or(0.0),
        w["mean_batch_size"].as_f64().unwrap_or(0.0),
        w["mean_batch_ms"].as_f64().unwrap_or(0.0),
        w["mean_write_and_commit_ms"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  batches over 2.5 ms: {:.0}, over 5 ms: {:.0}",
        w["batches_over_2_5_ms"].as_f64().unwrap_or(0.0),
        w["batches_over_5_ms"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  a send (means): {:.2} ms in the server's handler, of which {:.2} ms queued for and in its batch",
        w["mean_send_request_ms"].as_f64().unwrap_or(0.0),
        w["mean_send_in_writer_ms"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  a send waits {:.2} ms for its batch to begin",
        w["mean_send_queued_ms"].as_f64().unwrap_or(0.0)
    );
    if w["wal_syncs"].as_f64().unwrap_or(0.0) > 0.0 {
        println!(
            "  WAL fsyncs: {:.0}, {:.2} ms each; a batch waits {:.2} ms from its commit to its answers",
            w["wal_syncs"].as_f64().unwrap_or(0.0),
            w["mean_wal_sync_ms"].as_f64().unwrap_or(0.0),
            w["mean_batch_wal_wait_ms"].as_f64().unwrap_or(0.0),
        );
    }
    println!(
        "  audit index written behind: {:.0} transactions, {:.2} ms each",
        w["audit_index_transactions"].as_f64().unwrap_or(0.0),
        w["mean_audit_index_ms"].as_f64().unwrap_or(0.0),
    );
}

/// Prints the server's work per message during the load.
pub fn print_work(per: &Value, what: &str) {
    println!(
        "  server per {what}: CPU {:.0} µs, {:.1} write calls, {:.1} KiB written, {:.1} KiB to disk",
        per["cpu_us"].as_f64().unwrap_or(0.0),
        per["write_calls"].as_f64().unwrap_or(0.0),
        per["bytes_written"].as_f64().unwrap_or(0.0) / 1024.0,
        per["disk_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
    );
}

/// Latency percentiles in milliseconds.
pub fn percentiles(v: &mut [u64]) -> Value {
    json!({
        "p50_ms": chat::percentile(v, 50.0) as f64 / 1000.0,
        "p95_ms": chat::percentile(v, 95.0) as f64 / 1000.0,
        "p99_ms": chat::percentile(v, 99.0) as f64 / 1000.0,
        "max_ms": chat::percentile(v, 100.0) as f64 / 1000.0,
    })
}

fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(0);
    json!({"cpus": cpus, "cpu_model": model, "memory_kib": mem_kib, "os": std::env::consts::OS})
}

/// Prints the run's JSON line: scenario, backend, parameters, results, machine.
pub fn report(scenario: &str, backend: &str, params: Value, results: Value) {
    println!(
        "{}",
        json!({"scenario": scenario, "backend": backend, "params": params, "results": results, "machine": machine()})
    );
}

/// Prints what a chat run measured (rate, send and delivery latency) under `title`; returns
/// those results as JSON for the run's report.
pub fn print_chat(title: &str, a: &ChatArgs, r: &mut chat::ChatResult) -> Value {
    let rate_done = r.accepted as f64 / r.seconds.max(1e-9);
    let send = percentiles(&mut r.send_us);
    let delivery = percentiles(&mut r.delivery_us);
    println!("chat on {title}: {}", a.describe());
    println!(
        "  accepted {} messages in {:.2} s = {:.0} messages/s ({} failed)",
        r.accepted, r.seconds, rate_done, r.failed
    );
    println!(
        "  send latency     p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
        send["p50_ms"], send["p95_ms"], send["p99_ms"], send["max_ms"]
    );
    println!(
        "  delivery latency p50 {} ms, p95 {} ms, p99 {} ms, max {} ms ({} deliveries, {} missing)",
        delivery["p50_ms"],
        delivery["p95_ms"],
        delivery["p99_ms"],
        delivery["max_ms"],
        r.delivery_us.len(),
        r.missing
    );
    json!({"accepted": r.accepted, "failed": r.failed, "seconds": r.seconds,
           "messages_per_second": rate_done, "send_latency": send, "delivery_latency": delivery,
           "deliveries": r.delivery_us.len(), "missing": r.missing})
}

/// Prints the server's peak memory and CPU time (`cpu_what` says over what time), and puts
/// them in the run's `results`.
pub fn print_server(results: &mut Value, peak_rss_kib: u64, cpu_seconds: f64, cpu_what: &str) {
    println!("  server peak RSS {:.1} MiB, CPU {cpu_seconds:.2} s {cpu_what}", peak_rss_kib as f64 / 1024.0);
    results["server_peak_rss_kib"] = json!(peak_rss_kib);
    results["server_cpu_seconds"] = json!(cpu_seconds);
}

/// The local PostgreSQL's CPU per message since `before` (its CPU then), if it runs here.
pub fn database_cpu_per_message(before: Option<f64>, accepted: usize) -> Option<f64> {
    Some((server::database_cpu_seconds()? - before?) * 1e6 / accepted.max(1) as f64)
}

/// Prints and records the local PostgreSQL's CPU per message during the load, if it runs here:
/// what a server on PostgreSQL costs beyond its own process (on SQLite it is only the
/// database's idle work).
pub fn print_database(r: &chat::ChatResult, results: &mut Value) {
    if let Some(us) = r.database_cpu_us_per_message {
        println!("  PostgreSQL (this machine's, whoever used it) per message: CPU {us:.0} µs");
        results["database_cpu_us_per_message"] = json!(us);
    }
}

fn chat(ctx: &Ctx, a: &ChatArgs) -> anyhow::Result<()> {
    let server = ctx.start()?;
    let result = users(ctx, &server, a).and_then(|u| chat_load(ctx, &server, &u, a));
    let (peak_rss_kib, cpu_seconds) = server.usage();
    server.stop();
    ctx.cleanup();
    let mut r = result?;
    let mut results = print_chat(ctx.backend(), a, &mut r);
    print_server(&mut results, peak_rss_kib, cpu_seconds, "since it started");
    print_work(&r.server_per_message, "message");
    print_database(&r, &mut results);
    println!("  this tool per message: CPU {:.0} µs", r.tool_cpu_us_per_message);
    print_writer(&r.writer);
    results["server_per_message"] = r.server_per_message.clone();
    results["writer"] = r.writer.clone();
    results["tool_cpu_us_per_message"] = json!(r.tool_cpu_us_per_message);
    report("chat", ctx.backend(), a.json(), results);
    chat::check_complete(&r)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let haven = match cli.haven {
        Some(h) => h,
        None => std::env::current_exe()?.with_file_name("haven"),
    };
    let ctx = Ctx {
        haven,
        keep_data: cli.data_dir.is_some(),
        data_dir: cli
            .data_dir
            .unwrap_or_else(|| std::env::temp_dir().join(format!("haven-bench-{}", std::process::id()))),
        database_url: cli.database_url,
        // One thread: the tool shares two cores with the server, and a second worker thread
        // only added wake-ups between threads (about 12 % more of the tool's CPU per message).
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
    };
    match cli.scenario {
        Scenario::Chat(a) => {
            a.check()?;
            chat(&ctx, &a)
        }
        Scenario::Audit { load, verify_entries } => {
            load.check()?;
            audit::run(&ctx, &load, verify_entries)
        }
        Scenario::Connections(a) => connections::run(&ctx, &a),
        Scenario::Outbox(a) => outbox::run(&ctx, &a),
        Scenario::Matrix(a) => matrix::run(&ctx, &a),
        Scenario::Xmpp(a) => xmpp::run(&ctx, &a),
        Scenario::Compare(a) => compare::run(&ctx, &a),
        Scenario::Hold => connections::hold(&ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> anyhow::Result<()> {
        let cli = Cli::try_parse_from([&["haven-bench", "chat"], args].concat())?;
        let Scenario::Chat(a) = cli.scenario else { unreachable!("a chat command") };
        a.check()
    }

    #[test]
    fn a_load_that_cannot_run_is_refused_before_the_server_starts() {
        assert!(load(&[]).is_ok());
        assert!(load(&["--rate", "2000"]).is_ok());
        for rate in ["0", "-5", "NaN", "inf"] {
            let refused = load(&[&format!("--rate={rate}")]).unwrap_err();
            assert!(refused.to_string().contains("--rate"), "{rate}: {refused}");
        }
        assert!(load(&["--members", "1"]).unwrap_err().to_string().contains("--members"));
        assert!(load(&["--senders", "11"]).unwrap_err().to_string().contains("--senders"));
    }
}
