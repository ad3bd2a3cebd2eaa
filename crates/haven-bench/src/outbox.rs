//! Scenario `outbox`: Q patients, each with recorded consent and a patient conversation, are
//! each sent one secure-message text through the API, scheduled (`send_at`) for one moment
//! after all of them are queued; the outbox then drains them to the sink gateway (Twilio's wire
//! format). Measures texts per second from the first text at the sink to the last, and
//! duplicates at the sink (must be 0). With `--kill-after`, the server is killed with SIGKILL
//! once that many texts reached the sink and started again on the same data: every text must
//! still arrive exactly once, and end recorded as sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::chat::post;
use crate::sink::Sink;
use crate::{Ctx, bar, report};

/// The outbox load.
#[derive(Debug, Clone, Args)]
pub struct OutboxArgs {
    /// Texts (Q), one to each of Q patients.
    #[arg(long, default_value_t = 10_000)]
    texts: usize,
    /// Kill the server (SIGKILL) when the sink is handed this many texts, before it answers
    /// the last, then start the server again on the same data.
    #[arg(long)]
    kill_after: Option<usize>,
    /// Requests in flight while setting up and queueing.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

const ORG: &str = "Bench Texting Clinic";
const OUR_NUMBER: &str = "+15550009999";
const WORDING: &str = "May we text you when a secure message from your care team is waiting? \
                       Msg&data rates may apply. Reply STOP to opt out.";

/// A fixed-offset zone in which it is now early afternoon, so every text is inside the
/// patients' sending window whenever the benchmark runs.
fn afternoon_zone() -> String {
    let hour = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour();
    let offset = 13 - i32::from(hour);
    // IANA's Etc/GMT zones have the sign inverted: Etc/GMT-3 is UTC+3.
    if offset >= 0 { format!("Etc/GMT-{offset}") } else { format!("Etc/GMT+{}", -offset) }
}

/// Runs `count` jobs with at most `width` at once, ticking `progress` per job done.
async fn bounded<F, Fut>(
    count: usize,
    width: usize,
    progress: &indicatif::ProgressBar,
    job: F,
) -> anyhow::Result<Vec<Value>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(usize, Value)>> + Send + 'static,
{
    let mut out = vec![Value::Null; count];
    let mut running = JoinSet::new();
    for i in 0..count {
        if running.len() >= width
            && let Some(done) = running.join_next().await
        {
            let (at, v) = done??;
            out[at] = v;
            progress.inc(1);
        }
        running.spawn(job(i));
    }
    while let Some(done) = running.join_next().await {
        let (at, v) = done??;
        out[at] = v;
        progress.inc(1);
    }
    Ok(out)
}

/// Creates patient `i` with consent for care texts and a patient conversation; returns their
/// ids.
async fn patient(
    http: reqwest::Client,
    base: Arc<str>,
    token: Arc<str>,
    zone: Arc<str>,
    i: usize,
) -> anyhow::Result<(usize, Value)> {
    let p = post(
        &http,
        format!("{base}/api/v1/patients"),
        Some(&token),
        &json!({
        "mrn": format!("BENCH-{i:07}"), "name": format!("Bench Patient {i}"), "date_of_birth": "1970-01-01",
        "phone": format!("+1555{:07}", 2_000_000 + i), "time_zone": &*zone}),
    )
    .await
    .context("creating a patient")?;
    let id = p["id"].as_str().context("no patient id")?.to_owned();
    let consent =
        json!({"purposes": ["care"], "state": "granted", "source": "front-desk", "wording": WORDING});
    post(&http, format!("{base}/api/v1/patients/{id}/consent"), Some(&token), &consent)
        .await
        .context("recording consent")?;
    let conv = json!({"kind": "patient", "members": [], "patient_id": id, "title": "Reminder"});
    let c = post(&http, format!("{base}/api/v1/conversations"), Some(&token), &conv)
        .await
        .context("creating the conversation")?;
    Ok((i, json!({"patient": id, "conversation": c["id"]})))
}

/// Waits until `done` holds, checking every 100 ms, for at most `limit`.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// The texts' statuses as staff see them, counted.
async fn statuses(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    patients: &[Value],
    width: usize,
) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
    let ids: Arc<Vec<String>> =
        Arc::new(patients.iter().map(|p| p["patient"].as_str().unwrap_or_default().to_owned()).collect());
    let (base, token): (Arc<str>, Arc<str>) = (base.into(), token.into());
    let lists = bounded(ids.len(), width, &indicatif::ProgressBar::hidden(), |i| {
        let (http, base, token, ids) = (http.clone(), base.clone(), token.clone(), ids.clone());
        async move {
            let url = format!("{base}/api/v1/patients/{}/texts", ids[i]);
            let resp = http.get(url).bearer_auth(&*token).send().await?;
            anyhow::ensure!(resp.status().is_success(), "listing texts: {}", resp.status());
            Ok((i, resp.json::<Value>().await?))
        }
    })
    .await?;
    let mut counts = std::collections::BTreeMap::new();
    for t in lists.iter().filter_map(Value::as_array).flatten() {
        *counts.entry(t["status"].as_str().unwrap_or("?").to_owned()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Runs the scenario.
pub fn run(ctx: &Ctx, a: &OutboxArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.texts >= 1 && a.texts <= 1_000_000, "--texts must be between 1 and 1,000,000");
    anyhow::ensure!(a.kill_after.is_none_or(|k| k < a.texts), "--kill-after must be below --texts");
    let mut server = ctx.start()?;
    let result = (|| -> anyhow::Result<Value> {
        server.setup(ORG, 0, &|_| {})?;
        server.create_user(ORG, "bench.admin", "org_admin")?;
        server.create_user(ORG, "bench.nurse", "nurse")?;
        let http = reqwest::Client::new();
        let names = ["bench.admin".to_owned(), "bench.nurse".to_owned()];
        let signed = ctx.rt.block_on(crate::chat::sign_in(&http, &server.base, &names))?;
        let (admin, nurse): (Arc<str>, Arc<str>) = (signed[0].1.as_str().into(), signed[1].1.as_str().into());
        let sink = ctx.rt.block_on(Sink::start())?;
        let put = http.put(format!("{}/api/v1/organization/sms-gateway", server.base)).bearer_auth(&*admin);
        let resp = ctx.rt.block_on(put.json(&sink.gateway_settings(OUR_NUMBER)).send())?;
        if !resp.status().is_success() {
            bail!("setting the gateway: {} {}", resp.status(), ctx.rt.block_on(resp.text())?);
        }

        let zone: Arc<str> = afternoon_zone().into();
        let base: Arc<str> = server.base.as_str().into();
        let progress = bar(a.texts as u64, "patients");
        let started = Instant::now();
        let patients = ctx.rt.block_on(bounded(a.texts, a.concurrency, &progress, |i| {
            patient(http.clone(), base.clone(), nurse.clone(), zone.clone(), i)
        }))?;
        progress.finish_and_clear();
        let setup_seconds = started.elapsed().as_secs_f64();

        // Queueing takes about a third of the setup (one request per patient instead of three);
        // schedule every text for a moment safely after the last is queued.
        let hold = Duration::from_secs_f64((setup_seconds * 0.7).max(3.0));
        let due = jiff::Timestamp::now() + hold;
        let due_at = Instant::now() + hold;
        let progress = bar(a.texts as u64, "queued");
        let queue_started = Instant::now();
        let request = Arc::new(json!({"purpose": "care", "send_at": due.to_string()}));
        let conversations: Arc<Vec<Value>> =
            Arc::new(patients.iter().map(|p| p["conversation"].clone()).collect());
        ctx.rt.block_on(bounded(a.texts, a.concurrency, &progress, |i| {
            let (http, base, nurse, request, conversations) =
                (http.clone(), base.clone(), nurse.clone(), request.clone(), conversations.clone());
            async move {
                let conv = conversations[i].as_str().context("conversation id")?;
                let t = post(
                    &http,
                    format!("{base}/api/v1/conversations/{conv}/patient-texts"),
                    Some(&nurse),
                    &request,
                )
                .await?;
                Ok((i, t))
            }
        }))?;
        progress.finish_and_clear();
        let queue_seconds = queue_started.elapsed().as_secs_f64();
        let overlapped = Instant::now() > due_at;
        if sink.counts().total > 0 {
            bail!("texts reached the sink before their time");
        }

        if let Some(k) = a.kill_after {
            sink.kill_at(server.pid(), k);
        }
        let progress = bar(a.texts as u64, "sent");
        let mut killed_at = None;
        let limit = Duration::from_secs(120 + a.texts as u64 / 100);
        let drained = ctx.rt.block_on(until(limit, || {
            let c = sink.counts();
            progress.set_position(c.distinct as u64);
            if sink.killed() {
                killed_at = Some(c.distinct);
                return true;
            }
            c.distinct >= a.texts
        }));
        let mut restart_seconds = None;
        let mut restarted = None;
        if killed_at.is_some() {
            let t = Instant::now();
            server.kill_and_restart()?;
            restart_seconds = Some(t.elapsed().as_secs_f64());
            restarted = Some(Instant::now());
            progress.set_message("sent (restarted)");
            ctx.rt.block_on(until(limit, || {
                let c = sink.counts();
                progress.set_position(c.distinct as u64);
                c.distinct >= a.texts
            }));
        } else if !drained {
            bail!("only {} of {} texts reached the sink", sink.counts().distinct, a.texts);
        }
        progress.finish_and_clear();
        let arrivals = sink.first_arrivals();
        let (first, last) = (arrivals.first().copied(), arrivals.last().copied());
        let drain_seconds = match (first, last) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => 0.0,
        };
        // Texts claimed but not yet handed over at the kill wait out their lease (60 s) before
        // they are looked up and sent; count the ones that arrived that late.
        let after_lease = restarted.map(|r| {
            arrivals.iter().filter(|a| a.saturating_duration_since(r) > Duration::from_secs(30)).count()
        });
        let first_after_due_ms = first.map(|f| f.saturating_duration_since(due_at).as_secs_f64() * 1000.0);

        // Every text must end recorded as sent: after a kill, the ones in flight are looked up
        // at the sink once their lease runs out, not sent again.
        let settle_started = Instant::now();
        let mut counts = ctx.rt.block_on(statuses(&http, &server.base, &nurse, &patients, a.concurrency))?;
        while counts.get("sent").copied().unwrap_or(0) < a.texts
            && settle_started.elapsed() < Duration::from_secs(180)
        {
            std::thread::sleep(Duration::from_secs(2));
            counts = ctx.rt.block_on(statuses(&http, &server.base, &nurse, &patients, a.concurrency))?;
        }
        let settle_seconds = settle_started.elapsed().as_secs_f64();
        let c = sink.counts();
        Ok(json!({
            "texts": a.texts, "at_sink": c.total, "distinct_at_sink": c.distinct, "duplicates": c.total - c.distinct,
            "missing": a.texts.saturating_sub(c.distinct), "statuses": counts,
            "texts_per_second": if drain_seconds > 0.0 { (arrivals.len() - 1) as f64 / drain_seconds } else { 0.0 },
            "drain_seconds": drain_seconds, "first_text_after_due_ms": first_after_due_ms,
            "setup_seconds": setup_seconds, "queue_seconds": queue_seconds,
            "queued_per_second": a.texts as f64 / queue_seconds.max(1e-9), "queueing_overlapped_drain": overlapped,
            "killed_after": killed_at, "restart_seconds": restart_seconds, "settle_seconds": settle_seconds,
            "sent_after_lease": after_lease, "lookups_at_sink": c.lookups,
        }))
    })();
    let (peak_rss_kib, cpu_seconds) = server.usage();
    server.stop();
    ctx.cleanup();
    let mut r = result?;
    r["server_peak_rss_kib"] = json!(peak_rss_kib);
    r["server_cpu_seconds"] = json!(cpu_seconds);
    println!(
        "outbox on {}: Q={}{}",
        ctx.backend(),
        a.texts,
        a.kill_after.map(|k| format!(", kill -9 after {k} texts")).unwrap_or_default()
    );
    println!(
        "  queued {} texts in {:.2} s = {:.0} texts/s (setup of patients, consent and conversations {:.1} s)",
        a.texts,
        r["queue_seconds"].as_f64().unwrap_or(0.0),
        r["queued_per_second"].as_f64().unwrap_or(0.0),
        r["setup_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  drained to the sink in {:.2} s = {:.0} texts/s (first text {:.0} ms after they were due)",
        r["drain_seconds"].as_f64().unwrap_or(0.0),
        r["texts_per_second"].as_f64().unwrap_or(0.0),
        r["first_text_after_due_ms"].as_f64().unwrap_or(0.0)
    );
    if let Some(k) = a.kill_after {
        println!(
            "  killed with SIGKILL after {k} texts; restarted in {:.2} s; {} texts looked up at the sink, {} sent once their lease ran out",
            r["restart_seconds"].as_f64().unwrap_or(0.0),
            r["lookups_at_sink"],
            r["sent_after_lease"]
        );
    }
    println!(
        "  at the sink: {} texts, {} distinct, {} duplicates, {} missing; statuses {} (settled in {:.1} s)",
        r["at_sink"],
        r["distinct_at_sink"],
        r["duplicates"],
        r["missing"],
        r["statuses"],
        r["settle_seconds"].as_f64().unwrap_or(0.0)
    );
    if r["queueing_overlapped_drain"] == json!(true) {
        println!("  note: queueing was still running when the texts came due; the drain rate includes it");
    }
    println!("  server peak RSS {:.1} MiB, CPU {:.2} s", peak_rss_kib as f64 / 1024.0, cpu_seconds);
    let (dups, missing) = (r["duplicates"].as_u64().unwrap_or(0), r["missing"].as_u64().unwrap_or(0));
    let sent = r["statuses"]["sent"].as_u64().unwrap_or(0);
    report(
        "outbox",
        ctx.backend(),
        json!({"texts": a.texts, "kill_after": a.kill_after, "concurrency": a.concurrency}),
        r,
    );
    if dups > 0 || missing > 0 || sent != a.texts as u64 {
        bail!("{dups} duplicates, {missing} missing, {sent} of {} recorded as sent", a.texts);
    }
    Ok(())
}
