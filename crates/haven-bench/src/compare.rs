//! `compare`: the chat load side by side against Haven and the established servers on this
//! machine, in one command. A set runs every target once, in turn, and the sets follow one
//! another, so every server meets the machine's slow and fast minutes alike; each run starts its
//! server afresh on a fresh database (through `scripts/bench-ejabberd` and
//! `scripts/bench-synapse` for the others). Each run is this tool run again as a child process,
//! exactly as its own scenario would be run by hand, and its report (the human summary and the
//! JSON object) is passed on when it ends (its progress bar shows meanwhile). At the end: each target's runs and medians, and
//! Haven's ratios to the others, the result the issue asks for, as one more JSON object.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde_json::{Value, json};

use crate::Ctx;

/// A server and its store, as compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Target {
    HavenPostgres,
    EjabberdPostgres,
    Synapse,
    HavenSqlite,
    EjabberdSqlite,
}

impl Target {
    /// A set's order: each PostgreSQL run beside the others on PostgreSQL, then SQLite.
    const ALL: [Self; 5] =
        [Self::HavenPostgres, Self::EjabberdPostgres, Self::Synapse, Self::HavenSqlite, Self::EjabberdSqlite];

    fn key(self) -> &'static str {
        match self {
            Self::HavenPostgres => "haven-postgres",
            Self::EjabberdPostgres => "ejabberd-postgres",
            Self::Synapse => "synapse",
            Self::HavenSqlite => "haven-sqlite",
            Self::EjabberdSqlite => "ejabberd-sqlite",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::HavenPostgres => "Haven, PostgreSQL",
            Self::EjabberdPostgres => "ejabberd, PostgreSQL",
            Self::Synapse => "Synapse, PostgreSQL",
            Self::HavenSqlite => "Haven, SQLite",
            Self::EjabberdSqlite => "ejabberd, SQLite",
        }
    }
}

/// Haven's ratios: (Haven's target, the other, what the pair is called, whether both are on
/// PostgreSQL, so that its CPU belongs to their cost).
const PAIRS: [(Target, Target, &str, bool); 3] = [
    (Target::HavenPostgres, Target::EjabberdPostgres, "haven_to_ejabberd_postgres", true),
    (Target::HavenPostgres, Target::Synapse, "haven_to_synapse_postgres", true),
    (Target::HavenSqlite, Target::EjabberdSqlite, "haven_to_ejabberd_sqlite", false),
];

/// The comparison's settings. The load's shape is the (U=50 R=10 K=10 S=2); only the
/// number of messages differs by server, so that each run takes seconds, not hours.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Sets of runs; each runs every target once, in turn.
    #[arg(long, default_value_t = 2)]
    sets: usize,
    /// Messages (N) of each Haven run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Messages of each ejabberd run.
    #[arg(long, default_value_t = 5_000)]
    xmpp_messages: usize,
    /// Messages of each Synapse run (it accepts about ten a second on this machine).
    #[arg(long, default_value_t = 1_000)]
    matrix_messages: usize,
    /// Open loop at this many messages a second in all, on every target (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Targets to leave out, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    without: Vec<Target>,
    /// The PostgreSQL server (a database of this process's own, `havenbench_<pid>`, is made anew
    /// for each Haven run and dropped after it; the scripts put ejabberd's and Synapse's on
    /// 127.0.0.1:5432).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Where `bench-ejabberd` and `bench-synapse` are.
    #[arg(long, default_value = "scripts")]
    scripts: PathBuf,
}

/// Runs the comparison; fails at the end if any run failed (the others still run).
pub fn run(ctx: &Ctx, a: &CompareArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.sets >= 1, "--sets must be at least 1");
    anyhow::ensure!(
        a.messages >= 1 && a.xmpp_messages >= 1 && a.matrix_messages >= 1,
        "--messages, --xmpp-messages and --matrix-messages must be at least 1"
    );
    if let Some(rate) = a.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of messages a second"
        );
    }
    anyhow::ensure!(
        ctx.database_url.is_none() && !ctx.keep_data,
        "compare makes each run's database and data directory itself: give --postgres, not --database-url or --data-dir"
    );
    let targets: Vec<Target> = Target::ALL.into_iter().filter(|t| !a.without.contains(t)).collect();
    anyhow::ensure!(!targets.is_empty(), "--without leaves nothing to run");
    let me = std::env::current_exe().context("this tool's own path")?;
    let mut runs = Vec::new();
    let mut failed = 0;
    for set in 1..=a.sets {
        for (i, target) in targets.iter().enumerate() {
            println!("== set {set}/{}, run {}/{}: {}", a.sets, i + 1, targets.len(), target.label());
            let (report, outcome) = run_one(ctx, a, &me, *target);
            // A run that failed but reported (deliveries missing, say) still counts in the
            // summary: its missing deliveries must show there.
            if let Some(report) = report {
                runs.push((*target, report));
            }
            if let Err(e) = outcome {
                failed += 1;
                println!("  FAILED: {e:#}");
            }
        }
    }
    let summary = summarize(&runs);
    print_summary(&summary);
    println!("{}", json!({ "scenario": "compare", "params": params(a, &targets), "results": summary }));
    anyhow::ensure!(failed == 0, "{failed} of the comparison's runs failed");
    Ok(())
}

fn params(a: &CompareArgs, targets: &[Target]) -> Value {
    json!({
        "sets": a.sets,
        "targets": targets.iter().map(|t| t.key()).collect::<Vec<_>>(),
        "messages": { "haven": a.messages, "xmpp": a.xmpp_messages, "matrix": a.matrix_messages },
        "rate": a.rate,
    })
}

/// One run of `target`, its server started before and stopped after: its JSON report, if it
/// printed one, and whether it succeeded.
fn run_one(ctx: &Ctx, a: &CompareArgs, me: &Path, target: Target) -> (Option<Value>, anyhow::Result<()>) {
    match run_child(ctx, a, me, target) {
        Ok((report, status)) => {
            let outcome = if !status.success() {
                Err(anyhow::anyhow!("the run failed ({status})"))
            } else if report.is_none() {
                Err(anyhow::anyhow!("the run printed no JSON report"))
            } else {
                Ok(())
            };
            (report, outcome)
        }
        Err(e) => (None, Err(e)),
    }
}

fn run_child(
    ctx: &Ctx,
    a: &CompareArgs,
    me: &Path,
    target: Target,
) -> anyhow::Result<(Option<Value>, std::process::ExitStatus)> {
    // What an earlier run left in PostgreSQL's buffers is written out now, not in this run
    // (where a role may not checkpoint, the runs go on without).
    if let Some(server) = postgres_server(a) {
        let _ = psql(&format!("{server}/postgres"), "CHECKPOINT");
    }
    let mut child = Command::new(me);
    child.arg("--haven").arg(&ctx.haven);
    let rate = a.rate.map(|r| r.to_string());
    // The scenario, then its flags.
    let load = |child: &mut Command, scenario: &str, messages: usize, pid: Option<String>| {
        child.args([scenario, "--messages", &messages.to_string()]);
        if let Some(r) = &rate {
            child.args(["--rate", r]);
        }
        if let Some(pid) = pid {
            child.args(["--pid", &pid]);
        }
    };
    let mut database = None;
    let peer = match target {
        Target::HavenPostgres => {
            let db = Database::create(&a.postgres)?;
            child.args(["--database-url", &db.url()]);
            database = Some(db);
            load(&mut child, "chat", a.messages, None);
            None
        }
        Target::HavenSqlite => {
            load(&mut child, "chat", a.messages, None);
            None
        }
        Target::EjabberdPostgres | Target::EjabberdSqlite => {
            let store = if target == Target::EjabberdSqlite { "sqlite" } else { "postgres" };
            let peer = Peer::start(&a.scripts, "ejabberd", &[("EJABBERD_STORE", store)])?;
            load(&mut child, "xmpp", a.xmpp_messages, Some(peer.pid("ejabberd.pid")?));
            Some(peer)
        }
        Target::Synapse => {
            let peer = Peer::start(&a.scripts, "synapse", &[])?;
            load(&mut child, "matrix", a.matrix_messages, Some(peer.pid("homeserver.pid")?));
            Some(peer)
        }
    };
    let out = child.stderr(Stdio::inherit()).output().context("running this tool again")?;
    drop((peer, database));
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    Ok((report_in(&text), out.status))
}

/// The PostgreSQL server, unless no target uses it.
fn postgres_server(a: &CompareArgs) -> Option<&str> {
    let uses = [Target::HavenPostgres, Target::EjabberdPostgres, Target::Synapse];
    uses.iter().any(|t| !a.without.contains(t)).then(|| a.postgres.trim_end_matches('/'))
}

/// The JSON object of a run's output: its last line that is one.
fn report_in(output: &str) -> Option<Value> {
    output.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok().filter(Value::is_object))
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql").args(["-q", url, "-c", sql]).output().context("running psql")?;
    anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// A Haven run's PostgreSQL database, empty when made (the tool requires it), dropped on drop.
/// Named after this process, so that two comparisons (or a comparison and a test) never share
/// one.
struct Database {
    server: String,
    name: String,
}

impl Database {
    fn create(server: &str) -> anyhow::Result<Self> {
        let db = Self {
            server: server.trim_end_matches('/').to_owned(),
            name: format!("havenbench_{}", std::process::id()),
        };
        db.drop_it()?;
        psql(&db.admin(), &format!("CREATE DATABASE {}", db.name))?;
        Ok(db)
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    fn admin(&self) -> String {
        format!("{}/postgres", self.server)
    }

    fn drop_it(&self) -> anyhow::Result<()> {
        psql(&self.admin(), &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = self.drop_it();
    }
}

/// An established server started by its script, stopped (and its directory removed) on drop.
struct Peer {
    script: PathBuf,
    dir: PathBuf,
}

impl Peer {
    /// Starts it with `env` on the scripts' defaults (port, and Synapse on PostgreSQL), whatever
    /// the caller's environment says. The guard exists before the start, so that a start that
    /// failed half-way is stopped too.
    fn start(scripts: &Path, name: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let peer = Self {
            script: scripts.join(format!("bench-{name}")),
            dir: std::env::temp_dir().join(format!("haven-bench-compare-{name}-{}", std::process::id())),
        };
        let out = Command::new(&peer.script)
            .arg("start")
            .arg(&peer.dir)
            .env_remove("EJABBERD_PORT")
            .env_remove("SYNAPSE_PORT")
            .env_remove("SYNAPSE_DB")
            .envs(env.iter().copied())
            .output()
            .with_context(|| format!("running {} (see --scripts)", peer.script.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} start: {}",
            peer.script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(peer)
    }

    fn pid(&self, file: &str) -> anyhow::Result<String> {
        let pid = std::fs::read_to_string(self.dir.join(file)).context("the server's pid file")?;
        Ok(pid.trim().to_owned())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        match Command::new(&self.script).arg("stop").arg(&self.dir).output() {
            Ok(out) if out.status.success() => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            // Its directory is what the script stops it by: kept, so that it still can be.
            _ => println!(
                "  the server did not stop; stop it with: {} stop {}",
                self.script.display(),
                self.dir.display()
            ),
        }
    }
}

/// The median of `xs` (the mean of the middle two when even); none of nothing.
fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// A target's medians: accepted messages a second, delivery p99, and CPU per message of the
/// server and of the database (this machine's PostgreSQL).
type Medians = (Option<f64>, Option<f64>, Option<f64>, Option<f64>);

/// Each target's runs and medians, and Haven's ratios to the others (of the medians: accepted
/// messages a second; the other's CPU per message over Haven's, the server's alone and with the
/// database's; the other's delivery p99 over Haven's).
fn summarize(runs: &[(Target, Value)]) -> Value {
    let field = |r: &Value, path: &[&str]| path.iter().fold(r, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN);
    let mut targets = serde_json::Map::new();
    let mut medians: std::collections::HashMap<Target, Medians> = std::collections::HashMap::new();
    for target in Target::ALL {
        let results: Vec<&Value> =
            runs.iter().filter(|(t, _)| *t == target).map(|(_, r)| &r["results"]).collect();
        if results.is_empty() {
            continue;
        }
        let of = |path: &[&str]| results.iter().map(|r| field(r, path)).collect::<Vec<f64>>();
        let (rates, p99s, cpus, dbs) = (
            of(&["messages_per_second"]),
            of(&["delivery_latency", "p99_ms"]),
            of(&["server_per_message", "cpu_us"]),
            of(&["database_cpu_us_per_message"]),
        );
        let m = (median(rates.clone()), median(p99s.clone()), median(cpus.clone()), median(dbs.clone()));
        medians.insert(target, m);
        // Not measured (no PostgreSQL on the machine) is null, not NaN, in JSON.
        let measured = |xs: Vec<f64>| xs.into_iter().map(|x| x.is_finite().then_some(x)).collect::<Vec<_>>();
        targets.insert(
            target.key().to_owned(),
            json!({
                "label": target.label(),
                "runs": results.len(),
                "messages_per_second": rates,
                "delivery_p99_ms": p99s,
                "server_cpu_us_per_message": cpus,
                "database_cpu_us_per_message": measured(dbs),
                "missing": of(&["missing"]).iter().sum::<f64>(),
                "median_messages_per_second": m.0,
                "median_delivery_p99_ms": m.1,
                "median_server_cpu_us_per_message": m.2,
                "median_database_cpu_us_per_message": m.3,
            }),
        );
    }
    let mut ratios = serde_json::Map::new();
    for (haven, other, name, on_postgres) in PAIRS {
        let (Some(h), Some(o)) = (medians.get(&haven), medians.get(&other)) else { continue };
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
        // Only where both measured it, and only on PostgreSQL (on SQLite it is idle work).
        let total = |m: &Medians| m.2.zip(m.3).filter(|_| on_postgres).map(|(cpu, db)| cpu + db);
        ratios.insert(
            name.to_owned(),
            json!({
                "rate": ratio(h.0, o.0),
                "server_cpu": ratio(o.2, h.2),
                "server_and_database_cpu": ratio(total(o), total(h)),
                "delivery_p99": ratio(o.1, h.1),
            }),
        );
    }
    json!({ "targets": targets, "ratios": ratios })
}

fn print_summary(s: &Value) {
    let num = |v: &Value, digits: usize| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.digits$}"));
    println!(
        "== comparison: medians of each target's runs; CPU per message of the server and of this machine's PostgreSQL"
    );
    println!(
        "  {:<22} {:>5} {:>10} {:>14} {:>14} {:>16} {:>8}",
        "target", "runs", "msg/s", "delivery p99", "server CPU", "PostgreSQL CPU", "missing"
    );
    for t in Target::ALL.iter().filter_map(|t| s["targets"].get(t.key())) {
        println!(
            "  {:<22} {:>5} {:>10} {:>11} ms {:>11} µs {:>13} µs {:>8}",
            t["label"].as_str().unwrap_or(""),
            num(&t["runs"], 0),
            num(&t["median_messages_per_second"], 0),
            num(&t["median_delivery_p99_ms"], 1),
            num(&t["median_server_cpu_us_per_message"], 0),
            num(&t["median_database_cpu_us_per_message"], 0),
            num(&t["missing"], 0),
        );
    }
    for (haven, other, name, _) in PAIRS {
        let r = &s["ratios"][name];
        if r.is_object() {
            let with_database = match r["server_and_database_cpu"].as_f64() {
                Some(x) => format!(" ({x:.1}× with PostgreSQL's)"),
                None => String::new(),
            };
            println!(
                "  {} against {}: {}× the rate, {}× less server CPU per message{with_database}, a {}× lower delivery p99",
                haven.label(),
                other.label(),
                num(&r["rate"], 1),
                num(&r["server_cpu"], 1),
                num(&r["delivery_p99"], 1),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rate: f64, p99: f64, cpu: f64, missing: u64) -> Value {
        json!({ "scenario": "chat", "results": {
            "messages_per_second": rate, "missing": missing,
            "delivery_latency": { "p99_ms": p99 }, "server_per_message": { "cpu_us": cpu },
            "database_cpu_us_per_message": cpu / 2.0,
        }})
    }

    #[test]
    fn medians_and_ratios_come_from_every_run_of_each_target() {
        let runs = vec![
            (Target::HavenPostgres, report(3000.0, 14.0, 200.0, 0)),
            (Target::EjabberdPostgres, report(1500.0, 25.0, 700.0, 0)),
            (Target::HavenPostgres, report(2000.0, 16.0, 220.0, 0)),
            (Target::EjabberdPostgres, report(1000.0, 21.0, 600.0, 0)),
            (Target::HavenPostgres, report(4000.0, 10.0, 180.0, 0)),
            (Target::HavenSqlite, report(5000.0, 8.0, 250.0, 1)),
        ];
        let s = summarize(&runs);
        let hp = &s["targets"]["haven-postgres"];
        assert_eq!(hp["runs"], 3);
        assert_eq!(hp["median_messages_per_second"], 3000.0);
        assert_eq!(hp["median_delivery_p99_ms"], 14.0);
        let ep = &s["targets"]["ejabberd-postgres"];
        assert_eq!(ep["median_messages_per_second"], 1250.0);
        assert_eq!(ep["median_server_cpu_us_per_message"], 650.0);
        let r = &s["ratios"]["haven_to_ejabberd_postgres"];
        assert_eq!(r["rate"], 3000.0 / 1250.0);
        assert_eq!(r["server_cpu"], 650.0 / 200.0);
        assert_eq!(r["delivery_p99"], 23.0 / 14.0);
        // Each report's PostgreSQL CPU is half its server's here.
        assert_eq!(ep["median_database_cpu_us_per_message"], 325.0);
        assert_eq!(r["server_and_database_cpu"], (650.0 + 325.0) / (200.0 + 100.0));
        // On SQLite the database's CPU is no part of either's cost.
        let runs = [
            (Target::HavenSqlite, report(5000.0, 8.0, 250.0, 0)),
            (Target::EjabberdSqlite, report(500.0, 50.0, 2000.0, 0)),
        ];
        let sqlite = &summarize(&runs)["ratios"]["haven_to_ejabberd_sqlite"];
        assert_eq!(sqlite["server_cpu"], 8.0);
        assert!(sqlite["server_and_database_cpu"].is_null());
        // A missing delivery is counted, not hidden in a median.
        assert_eq!(s["targets"]["haven-sqlite"]["missing"], 1.0);
        // No ratio to a server that was not run.
        assert!(s["ratios"].get("haven_to_synapse_postgres").is_none());
        assert!(s["ratios"].get("haven_to_ejabberd_sqlite").is_none());
        assert!(s["targets"].get("synapse").is_none());
    }

    #[test]
    fn the_report_is_the_last_json_object_a_run_prints() {
        let out =
            "chat on sqlite: ...\n  accepted 20 messages\n{\"scenario\":\"chat\",\"n\":1}\n  {not json\n";
        assert_eq!(report_in(out).unwrap()["n"], 1);
        assert!(report_in("no report\n[1,2]\n").is_none());
    }

    /// Runs `compare` with `args` (and the global `--database-url` when given): the haven
    /// binary does not exist, so only what is refused before any run can succeed or fail here.
    fn refused(args: &[&str], database_url: Option<&str>) -> String {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([&["haven-bench", "compare"], args].concat()).unwrap();
        let crate::Scenario::Compare(a) = cli.scenario else { unreachable!("a compare command") };
        let ctx = Ctx {
            haven: PathBuf::from("/nonexistent/haven"),
            data_dir: std::env::temp_dir(),
            keep_data: false,
            database_url: database_url.map(str::to_owned),
            rt: tokio::runtime::Builder::new_current_thread().build().unwrap(),
        };
        run(&ctx, &a).unwrap_err().to_string()
    }

    #[test]
    fn a_comparison_that_cannot_run_is_refused_before_any_server_starts() {
        for rate in ["0", "-1", "NaN", "inf"] {
            assert!(refused(&[&format!("--rate={rate}")], None).contains("--rate"), "{rate}");
        }
        assert!(refused(&["--sets", "0"], None).contains("--sets"));
        assert!(refused(&["--xmpp-messages", "0"], None).contains("--xmpp-messages"));
        let all = "haven-postgres,ejabberd-postgres,synapse,haven-sqlite,ejabberd-sqlite";
        assert!(refused(&["--without", all], None).contains("nothing to run"));
        assert!(refused(&[], Some("postgres://x/y")).contains("--postgres"));
    }

    #[test]
    fn a_median_skips_what_was_not_measured() {
        assert_eq!(median(vec![3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![f64::NAN]), None);
        assert_eq!(median(Vec::new()), None);
    }
}
