//! The tool runs end to end against a real server (a small chat run on SQLite): every message
//! accepted, every delivery seen, and one JSON object with the measurements.

use std::path::PathBuf;
use std::process::Command;

/// The tool's binary, and the `haven` binary built beside it.
fn binaries() -> (PathBuf, PathBuf) {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_haven-bench"));
    let haven = bench.with_file_name("haven");
    (bench, haven)
}

/// Runs the tool with `args`, which must succeed; returns the JSON object of its last line.
fn run_bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(binaries().0).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn a_small_chat_run_reports_json_with_no_missing_deliveries() {
    let haven = binaries().1;
    assert!(haven.exists(), "build the haven binary first (cargo test --workspace does)");
    let json = run_bench(&[
        "--haven",
        haven.to_str().unwrap(),
        "chat",
        "--users",
        "5",
        "--conversations",
        "2",
        "--members",
        "3",
        "--senders",
        "2",
        "--messages",
        "60",
    ]);
    assert_eq!(json["scenario"], "chat");
    assert_eq!(json["results"]["accepted"], 60);
    assert_eq!(json["results"]["missing"], 0);
    assert_eq!(json["results"]["deliveries"], 60 * 2);
    assert!(json["results"]["messages_per_second"].as_f64().unwrap() > 0.0);
    assert!(json["results"]["server_peak_rss_kib"].as_u64().unwrap() > 0);
}

#[test]
fn a_small_audit_run_counts_appends_and_verifies_the_exports() {
    let haven = binaries().1;
    let json = run_bench(&[
        "--haven",
        haven.to_str().unwrap(),
        "audit",
        "--users",
        "4",
        "--conversations",
        "1",
        "--members",
        "3",
        "--senders",
        "1",
        "--messages",
        "40",
        "--verify-entries",
        "3000",
    ]);
    assert_eq!(json["scenario"], "audit");
    let r = &json["results"];
    // One entry per message sent, plus the conversation's creation.
    assert!((41..=43).contains(&r["appended"].as_u64().unwrap()), "{r}");
    assert!(r["appends_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(r["synthetic_entries"], 3000);
    assert!(r["synthetic_verify_seconds"].as_f64().unwrap() > 0.0);
}

/// Synapse, started by `scripts/bench-synapse` on its own SQLite file and a free port, and
/// stopped when dropped (also when the test fails).
struct Synapse {
    script: PathBuf,
    dir: PathBuf,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new(&self.script).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_small_matrix_run_against_synapse_sees_every_delivery() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/synapse-venv");
    assert!(
        venv.join("bin/synctl").exists(),
        "install Synapse first: scripts/bench-synapse install (scripts/test does)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let synapse = Synapse {
        script: root.join("scripts/bench-synapse"),
        dir: std::env::temp_dir().join(format!("haven-bench-synapse-smoke-{}", std::process::id())),
    };
    let started = Command::new(&synapse.script)
        .arg("start")
        .arg(&synapse.dir)
        .env("SYNAPSE_PORT", port.to_string())
        .env("SYNAPSE_DB", "sqlite")
        .env("SYNAPSE_VENV", &venv)
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let pid = std::fs::read_to_string(synapse.dir.join("homeserver.pid")).unwrap();

    let homeserver = format!("http://127.0.0.1:{port}");
    let json = run_bench(&[
        "matrix",
        "--homeserver",
        &homeserver,
        "--pid",
        pid.trim(),
        "--users",
        "5",
        "--conversations",
        "2",
        "--members",
        "3",
        "--senders",
        "2",
        "--messages",
        "20",
    ]);
    assert_eq!(json["scenario"], "chat");
    assert_eq!(json["backend"], "matrix (Synapse 1.163.2)");
    let r = &json["results"];
    assert_eq!(r["accepted"], 20);
    assert_eq!(r["missing"], 0);
    // Each message reaches the two other members of its room, through their /sync.
    assert_eq!(r["deliveries"], 20 * 2);
    assert!(r["server_cpu_seconds"].as_f64().unwrap() > 0.0);
}
