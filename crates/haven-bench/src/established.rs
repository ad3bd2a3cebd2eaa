//! What the scenarios against established servers (`matrix`, `xmpp`) share: the chat load
//! through `chat::run`, the server's CPU counted from the first send, and the report.
//!
//! The server is not started by the tool, so with `--pid` its process's peak memory and CPU
//! time are read from /proc, as for Haven; the local PostgreSQL's CPU during the load is
//! reported beside it, for both.

use anyhow::Context;
use serde_json::{Value, json};

use crate::chat::{Api, ChatParams, ChatResult};
use crate::{ChatArgs, Ctx};

/// The names of `n` new users (`bench{time}u{i}`): they carry the run's start time, so that
/// runs against one server do not collide.
pub fn new_user_names(n: usize) -> Vec<String> {
    let tag = jiff::Timestamp::now().as_second();
    (0..n).map(|i| format!("bench{tag}u{i}")).collect()
}

/// Runs the chat load, speaking `api` to the server at `base` with its signed-up `users`, and
/// prints and reports it as `chat`'s (under `label`, which names the server); `extra` adds the
/// API's own findings to the JSON results before they are reported, and fails the run (once it
/// is reported) if they show it incomplete.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ctx: &Ctx,
    api: Api,
    base: &str,
    users: &[(String, String)],
    pid: Option<u32>,
    load: &ChatArgs,
    label: &str,
    extra: impl FnOnce(&ChatResult, &mut Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let bar = crate::bar(load.messages as u64, "messages");
    let params = ChatParams::from(load);
    // The counters are read once the conversations exist and every member listens: making
    // rooms costs these servers far more than it costs Haven, and is not what the load measures.
    let mut before = None;
    let load_begins = || {
        before = Some((
            pid.map(crate::server::Work::of),
            crate::server::own_cpu_seconds(),
            crate::server::database_cpu_seconds(),
        ))
    };
    let result = ctx.rt.block_on(crate::chat::run(api, base, users, &params, &bar, load_begins));
    bar.finish_and_clear();
    let mut r = result.context("the chat load failed")?;
    let (server_before, tool_before, database_before) = before.context("the load never began")?;
    r.tool_cpu_us_per_message =
        (crate::server::own_cpu_seconds() - tool_before) * 1e6 / r.accepted.max(1) as f64;
    r.database_cpu_us_per_message = crate::database_cpu_per_message(database_before, r.accepted);
    let mut results = crate::print_chat(label, load, &mut r);
    if let (Some(pid), Some(before)) = (pid, server_before) {
        let (peak_rss_kib, _) = crate::server::usage_of(pid);
        let now = crate::server::Work::of(pid);
        r.server_per_message = now.per(&before, r.accepted);
        // Peak memory is the process's since it started: restart the server between runs.
        crate::print_server(
            &mut results,
            peak_rss_kib,
            now.cpu_seconds - before.cpu_seconds,
            "during the load",
        );
        // Only the CPU per message: these servers' socket writes are not one write(2) each, so
        // /proc's write counters would not compare with Haven's.
        println!(
            "  server per message: CPU {:.0} µs",
            r.server_per_message["cpu_us"].as_f64().unwrap_or(0.0)
        );
        results["server_per_message"] = r.server_per_message.clone();
    }
    let found = extra(&r, &mut results);
    crate::print_database(&r, &mut results);
    println!("  this tool per message: CPU {:.0} µs", r.tool_cpu_us_per_message);
    results["tool_cpu_us_per_message"] = json!(r.tool_cpu_us_per_message);
    crate::report("chat", label, load.json(), results);
    crate::chat::check_complete(&r)?;
    found
}
