//! Scenario `audit`: how fast the tamper-evident log grows under the chat load (entries appended
//! per second, read from the signed checkpoints before and after), how long the operator's
//! `haven audit export` and the auditor's offline `haven audit verify` take on that log, and
//! how long `haven audit verify` takes on a synthetic export of a million entries.

use anyhow::Context;
use serde_json::{Value, json};

use crate::{ChatArgs, Ctx, bar, chat, report, server};

fn checkpoint_size(ctx: &Ctx, base: &str, token: &str) -> anyhow::Result<u64> {
    ctx.rt.block_on(async {
        let v: Value = reqwest::Client::new()
            .get(format!("{base}/api/v1/audit/checkpoint"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        v["size"].as_u64().context("no size in the checkpoint")
    })
}

/// Runs the scenario.
pub fn run(ctx: &Ctx, a: &ChatArgs, verify_entries: u64) -> anyhow::Result<()> {
    let server = ctx.start()?;
    let outcome = measure(ctx, &server, a, verify_entries);
    server.stop();
    ctx.cleanup();
    let results = outcome?;
    println!("audit on {}: chat load {}", ctx.backend(), a.describe());
    println!(
        "  appended {} entries in {:.2} s = {:.0} appends/s (with {:.0} messages/s accepted)",
        results["appended"],
        results["seconds"].as_f64().unwrap_or(0.0),
        results["appends_per_second"].as_f64().unwrap_or(0.0),
        results["messages_per_second"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  haven audit export of the whole log ({} entries): {:.2} s; haven audit verify: {:.2} s",
        results["log_entries"],
        results["export_seconds"].as_f64().unwrap_or(0.0),
        results["log_verify_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  haven audit verify of a synthetic export of {} entries ({:.0} MB): {:.2} s",
        verify_entries,
        results["synthetic_megabytes"].as_f64().unwrap_or(0.0),
        results["synthetic_verify_seconds"].as_f64().unwrap_or(0.0)
    );
    let mut params = a.json();
    params["verify_entries"] = json!(verify_entries);
    report("audit", ctx.backend(), params, results);
    Ok(())
}

fn measure(ctx: &Ctx, server: &server::Server, a: &ChatArgs, verify_entries: u64) -> anyhow::Result<Value> {
    let users = crate::users(ctx, server, a)?;
    server.create_user("Bench Clinic", "bench.officer", "compliance_officer")?;
    let officer = ctx
        .rt
        .block_on(chat::sign_in(&reqwest::Client::new(), &server.base, &["bench.officer".to_owned()]))?
        .remove(0)
        .1;
    let before = checkpoint_size(ctx, &server.base, &officer)?;
    let load = crate::chat_load(ctx, server, &users, a)?;
    let after = checkpoint_size(ctx, &server.base, &officer)?;
    let (peak_rss_kib, cpu_seconds) = server.usage();
    let appended = after - before;

    let export = ctx.data_dir.join("bench-audit-export.txt");
    let path = export.to_str().context("a UTF-8 data directory")?;
    let export_seconds = server.haven(&["audit", "export", "--output", path])?;
    let log_verify_seconds = server.haven(&["audit", "verify", path])?;
    let _ = std::fs::remove_file(&export);

    let synthetic = ctx.data_dir.join("bench-synthetic-export.txt");
    let bar = bar(verify_entries, "writing");
    {
        let file = std::fs::File::create(&synthetic).context("creating the synthetic export")?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        haven_audit::synthetic::write(verify_entries, &mut out, &mut |n| bar.set_position(n))?;
        // On disk before the verifier starts: otherwise the kernel writes the fresh half
        // gigabyte back while it is being verified, and the verifier is charged for the
        // generator's I/O. An auditor verifies a file that is already stored.
        out.into_inner().context("writing the synthetic export")?.sync_all()?;
    }
    bar.finish_and_clear();
    let megabytes = std::fs::metadata(&synthetic)?.len() as f64 / 1e6;
    let path = synthetic.to_str().context("a UTF-8 data directory")?;
    let synthetic_verify_seconds = server.haven(&["audit", "verify", path])?;
    let _ = std::fs::remove_file(&synthetic);

    Ok(json!({
        "appended": appended, "seconds": load.seconds,
        "appends_per_second": appended as f64 / load.seconds.max(1e-9),
        "messages_per_second": load.accepted as f64 / load.seconds.max(1e-9),
        "missing": load.missing, "failed": load.failed,
        "log_entries": after, "export_seconds": export_seconds, "log_verify_seconds": log_verify_seconds,
        "synthetic_entries": verify_entries, "synthetic_megabytes": megabytes,
        "synthetic_verify_seconds": synthetic_verify_seconds,
        "server_peak_rss_kib": peak_rss_kib, "server_cpu_seconds": cpu_seconds,
    }))
}
