//! `haven-bench`: drives a Haven server over its public API exactly as clients would, and prints
//! a human summary plus one JSON object per run (parameters, results, machine). It starts the
//! server itself (release build recommended) on a fresh data directory, SQLite by default or
//! PostgreSQL with `--database-url`, and sets it up through `haven admin`.
//!
//! Scenarios: `chat` (closed or open loop). Speed targets are measured here and reported, never
//! asserted by tests.

mod chat;
mod server;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

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
    /// Keep the server's data directory here instead of a temporary one.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Group conversations with every member on a WebSocket; senders post messages.
    Chat {
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
    },
}

fn machine() -> serde_json::Value {
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let haven = match cli.haven {
        Some(h) => h,
        None => std::env::current_exe()?.with_file_name("haven"),
    };
    let keep_data = cli.data_dir.is_some();
    let data_dir = cli
        .data_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("haven-bench-{}", std::process::id())));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.scenario {
        Scenario::Chat { users, conversations, members, senders, messages, rate } => {
            anyhow::ensure!(members >= 2 && members <= users, "--members must be between 2 and --users");
            anyhow::ensure!(senders >= 1 && senders <= members, "--senders must be between 1 and --members");
            let params = chat::ChatParams { conversations, members, senders, messages, rate };
            let backend = if cli.database_url.is_some() { "postgres" } else { "sqlite" };
            let server = server::Server::start(&haven, &data_dir, cli.database_url.clone())?;
            let bar = indicatif::ProgressBar::new(users as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len}").expect("template"),
            );
            bar.set_message("users");
            let names = server.setup("Bench Clinic", users, &|n| bar.set_position(n as u64))?;
            let result = rt.block_on(async {
                let http = reqwest::Client::new();
                bar.set_message("sign-in");
                bar.set_position(0);
                let signed = chat::sign_in(&http, &server.base, &names).await?;
                bar.set_message("messages");
                bar.set_length(messages as u64);
                bar.set_position(0);
                chat::run(&server.base, &signed, &params, &bar).await
            });
            bar.finish_and_clear();
            let (peak_rss_kib, cpu_seconds) = server.usage();
            server.stop();
            if !keep_data {
                let _ = std::fs::remove_dir_all(&data_dir);
            }
            let mut r = result.context("the chat scenario failed")?;
            let rate_done = r.accepted as f64 / r.seconds.max(1e-9);
            let pct = |v: &mut Vec<u64>| {
                json!({
                    "p50_ms": chat::percentile(v, 50.0) as f64 / 1000.0,
                    "p95_ms": chat::percentile(v, 95.0) as f64 / 1000.0,
                    "p99_ms": chat::percentile(v, 99.0) as f64 / 1000.0,
                    "max_ms": chat::percentile(v, 100.0) as f64 / 1000.0,
                })
            };
            let send = pct(&mut r.send_us);
            let delivery = pct(&mut r.delivery_us);
            println!(
                "chat on {backend}: U={users} R={conversations} K={members} S={senders} N={messages} {}",
                rate.map(|r| format!("open loop at {r}/s")).unwrap_or_else(|| "closed loop".into())
            );
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
            println!("  server peak RSS {:.1} MiB, CPU {:.2} s", peak_rss_kib as f64 / 1024.0, cpu_seconds);
            println!(
                "{}",
                json!({
                    "scenario": "chat", "backend": backend,
                    "params": {"users": users, "conversations": conversations, "members": members, "senders": senders,
                               "messages": messages, "rate": rate},
                    "results": {"accepted": r.accepted, "failed": r.failed, "seconds": r.seconds,
                                "messages_per_second": rate_done, "send_latency": send, "delivery_latency": delivery,
                                "deliveries": r.delivery_us.len(), "missing": r.missing,
                                "server_peak_rss_kib": peak_rss_kib, "server_cpu_seconds": cpu_seconds},
                    "machine": machine(),
                })
            );
            if r.missing > 0 || r.failed > 0 {
                anyhow::bail!("{} deliveries missing, {} sends failed", r.missing, r.failed);
            }
        }
    }
    Ok(())
}
