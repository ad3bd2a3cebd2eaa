//! Audit forwarding to a real syslog collector: Debian's rsyslog with its TLS (gtls) driver.
//! The collector starts after entries exist, goes down while more are written, and comes back:
//! it must end up with every entry, in order.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn haven(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_haven"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HAVEN_DATA_DIR", data_dir)
        .env("HAVEN_LOG_LEVEL", "warn");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rsyslogd(dir: &Path) -> Child {
    let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("rsyslogd is required for this test (apt-get install rsyslog rsyslog-gnutls; .ci/run does)");
    let _ = std::fs::remove_file(dir.join("rsyslogd.pid"));
    Command::new(bin)
        .args(["-n", "-f"])
        .arg(dir.join("rsyslog.conf"))
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsyslogd")
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// Sequence numbers received, in arrival order.
fn received(file: &Path) -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string(file) else { return Vec::new() };
    text.lines()
        .filter_map(|l| l.split("seq=\"").nth(1))
        .filter_map(|r| r.split('"').next())
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn audit_size(d: &Path) -> u64 {
    let o = haven(d).args(["audit", "checkpoint"]).output().unwrap();
    String::from_utf8(o.stdout).unwrap().lines().nth(1).unwrap().parse().unwrap()
}

fn wait_for_all(file: &Path, size: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = received(file);
        let mut unique = got.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() as u64 >= size {
            return got;
        }
        assert!(Instant::now() < deadline, "collector has {} of {size} entries: {got:?}", unique.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_user(d: &Path, name: &str) {
    let o = haven(d)
        .args([
            "admin",
            "create-user",
            "--org",
            "Syslog Clinic",
            "--username",
            name,
            "--display-name",
            "S",
            "--role",
            "nurse",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn every_entry_reaches_rsyslog_in_order_across_an_outage() {
    let dir: PathBuf = std::env::temp_dir().join(format!("haven-syslog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("work")).unwrap();
    let d = dir.join("data");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let out = dir.join("received.log");
    let conf = format!(
        r#"global(workDirectory="{w}" maxMessageSize="64k"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{c}" DefaultNetstreamDriverCertFile="{c}" DefaultNetstreamDriverKeyFile="{k}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="haven" type="string" string="%msgid% %structured-data% %msg%\n")
action(type="omfile" file="{o}" template="haven")
"#,
        w = dir.join("work").display(),
        c = dir.join("cert.pem").display(),
        k = dir.join("key.pem").display(),
        o = out.display(),
    );
    std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();

    // Entries exist before the collector is up.
    assert!(haven(&d).args(["admin", "create-org", "--name", "Syslog Clinic"]).status().unwrap().success());
    create_user(&d, "nurse.one");
    let mut server = haven(&d)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("HAVEN_AUDIT_SYSLOG_ADDRESS", format!("127.0.0.1:{port}"))
        .env("HAVEN_AUDIT_SYSLOG_SERVER_NAME", "localhost")
        .env("HAVEN_AUDIT_SYSLOG_CA_FILE", dir.join("cert.pem"))
        .env("HAVEN_AUDIT_SYSLOG_POLL_MS", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("Haven is listening"), "{line}");
    std::thread::sleep(Duration::from_millis(500));

    let mut collector = rsyslogd(&dir);
    let first = wait_for_all(&out, audit_size(&d));
    stop(&mut collector);

    // Written while the collector is down: delivered when it returns.
    create_user(&d, "nurse.two");
    create_user(&d, "nurse.three");
    std::thread::sleep(Duration::from_millis(500));
    let mut collector = rsyslogd(&dir);
    let size = audit_size(&d);
    let all = wait_for_all(&out, size);
    stop(&mut collector);
    stop(&mut server);

    assert!(all.len() >= first.len());
    // In order: the first arrival of each entry is in sequence order, and none is missing.
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<u64> = all.iter().copied().filter(|s| seen.insert(*s)).collect();
    assert_eq!(firsts, (1..=size).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.lines().all(|l| l.starts_with("ATNA-FHIR [haven@32473 seq=")), "{text}");
    assert!(text.contains(r#""resourceType":"AuditEvent""#));
    assert!(text.contains("user-create"));
    let _ = std::fs::remove_dir_all(&dir);
}
