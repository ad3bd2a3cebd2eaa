//! The `haven` binary as an operator uses it: configuration, refusals, migrations, the demo,
//! admin commands and a clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn haven(data_dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_haven"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HAVEN_DATA_DIR", data_dir)
        .env("HAVEN_LOG_LEVEL", "warn");
    c
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("haven-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn version_and_example_config() {
    let d = temp_dir("example");
    let o = haven(&d).arg("version").output().unwrap();
    assert!(o.status.success());
    assert!(text(&o).starts_with("haven "));
    let o = haven(&d).args(["config", "example"]).output().unwrap();
    assert!(o.status.success());
    let example = String::from_utf8(o.stdout).unwrap();
    for needle in [
        "[server]",
        "bind",
        "127.0.0.1:8080",
        "[server.tls]",
        "[database]",
        "HAVEN_DATABASE_URL",
        "[security]",
        "argon2_memory_kib",
        "[keys]",
        "[log]",
    ] {
        assert!(example.contains(needle), "example lacks {needle}");
    }
    // Uncommented, the example is a valid configuration.
    let uncommented: String = example
        .lines()
        .map(|l| if l.starts_with('#') && l.contains(" = ") && !l.starts_with("# ") { &l[1..] } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let f = std::env::temp_dir().join(format!("haven-example-{}.toml", std::process::id()));
    std::fs::write(&f, uncommented).unwrap();
    let o = haven(&d).args(["--config", f.to_str().unwrap(), "config", "check"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn bad_settings_are_refused_with_the_setting_named() {
    let d = temp_dir("badconf");
    for (var, value, needle) in [
        ("HAVEN_SERVER_BIND", "somewhere", "server.bind"),
        ("HAVEN_DATABASE_URL", "mysql://root@localhost/haven", "database.url"),
        ("HAVEN_SECURITY_ARGON2_MEMORY_KIB", "64", "security.argon2_memory_kib"),
        ("HAVEN_SECURITY_MAX_FAILURES_PER_ACCOUNT", "many", "HAVEN_SECURITY_MAX_FAILURES_PER_ACCOUNT"),
        ("HAVEN_LOG_FORMAT", "xml", "log.format"),
    ] {
        let sub: &[&str] = if var == "HAVEN_LOG_FORMAT" { &["migrate"] } else { &["config", "check"] };
        let o = haven(&d).env(var, value).args(sub).output().unwrap();
        assert!(!o.status.success(), "{var}={value} accepted");
        assert!(text(&o).contains(needle), "{var}: {}", text(&o));
    }
    let o = haven(&d).args(["--config", "/nonexistent/haven.toml", "config", "check"]).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("does not exist"));
}

#[test]
fn refuses_a_public_address_without_tls() {
    let d = temp_dir("public");
    let o = haven(&d).args(["serve", "--bind", "0.0.0.0:0"]).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("refusing to listen on 0.0.0.0:0 without TLS"), "{}", text(&o));
    assert!(!d.join("haven.db").exists(), "nothing is created before the refusal");
    let o = haven(&d)
        .env("HAVEN_SERVER_PROXY_TLS_TERMINATED", "true")
        .args(["config", "check"])
        .env("HAVEN_SERVER_BIND", "0.0.0.0:8443")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn migrate_then_admin_commands() {
    let d = temp_dir("admin");
    let o = haven(&d).arg("migrate").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Every shipped SQLite migration must apply on a fresh database, none more, none fewer.
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../haven-store/migrations/sqlite"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count();
    assert!(shipped >= 7);
    assert!(text(&o).contains(&format!("{shipped} migration(s) applied")), "{}", text(&o));
    let o = haven(&d).arg("migrate").output().unwrap();
    assert!(text(&o).contains("0 migration(s) applied"));
    assert!(haven(&d).args(["admin", "create-org", "--name", "Hillside Clinic"]).status().unwrap().success());
    let key = d.join("master.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600,
        "the master key is private"
    );
    let mut child = haven(&d)
        .args([
            "admin",
            "create-user",
            "--org",
            "hillside clinic",
            "--username",
            "Dr.Who",
            "--display-name",
            "Dana Who",
            "--role",
            "clinician",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"tangerine-owl-piano-44\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = haven(&d)
        .args([
            "admin",
            "create-user",
            "--org",
            "Hillside Clinic",
            "--username",
            "nurse.weak",
            "--display-name",
            "W",
            "--role",
            "nurse",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"password1\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!o.status.success(), "a common password is refused");
    let o = haven(&d)
        .args([
            "admin",
            "create-user",
            "--org",
            "Hillside Clinic",
            "--username",
            "admin.h",
            "--display-name",
            "Ann Admin",
            "--role",
            "org_admin",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("initial password (shown once): "));
    let o = haven(&d)
        .args([
            "admin",
            "create-user",
            "--org",
            "Nowhere",
            "--username",
            "x.y",
            "--display-name",
            "X",
            "--role",
            "nurse",
        ])
        .output()
        .unwrap();
    assert!(text(&o).contains("no organisation named"));
    assert!(
        haven(&d)
            .args(["admin", "deactivate-user", "--org", "Hillside Clinic", "--username", "dr.who"])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        haven(&d)
            .args(["admin", "reset-mfa", "--org", "Hillside Clinic", "--username", "admin.h"])
            .status()
            .unwrap()
            .success()
    );
    let o = haven(&d)
        .args(["admin", "policy", "--org", "Hillside Clinic", "--inactivity-timeout", "60"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("inactivity_timeout_seconds = 60") && text(&o).contains("mfa_required = true"));
    let o = haven(&d)
        .args(["admin", "policy", "--org", "Hillside Clinic", "--inactivity-timeout", "5"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("inactivity_timeout_seconds"), "{}", text(&o));
    let o = haven(&d).args(["admin", "list-users", "--org", "Hillside Clinic"]).output().unwrap();
    let out = text(&o);
    assert!(
        out.lines().any(|l| l.contains("dr.who") && l.contains("deactivated") && l.contains("clinician")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("admin.h") && l.contains("active") && l.contains("org_admin")),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Starts `haven serve --demo`, returns the child, its stdout lines up to "listening", and the
/// address.
#[allow(clippy::zombie_processes, reason = "the child is returned to the caller, which waits for it")]
fn start_demo(d: &std::path::Path) -> (std::process::Child, Vec<String>, String) {
    let mut child = haven(d)
        .args(["serve", "--demo", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server exited early: {lines:?}");
        }
        let line = line.trim_end().to_owned();
        if let Some(addr) = line.strip_prefix("Haven is listening on http://") {
            let addr = addr.to_owned();
            lines.push(line);
            return (child, lines, addr);
        }
        lines.push(line);
    }
}

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap()
}

#[test]
fn demo_prints_accounts_once_and_shuts_down_cleanly() {
    let d = temp_dir("demo");
    let (mut child, lines, addr) = start_demo(&d);
    let all = lines.join("\n");
    for user in ["admin", "dr.okafor", "dr.lindqvist", "nurse.patel", "frontdesk.garcia", "compliance.chen"] {
        assert!(
            lines.iter().any(|l| l.trim_start().starts_with(&format!("{user} "))),
            "{user} missing:\n{all}"
        );
    }
    assert!(all.contains("Riverside Clinic"));
    assert!(get(&addr, "/readyz").starts_with("HTTP/1.1 200"));
    let status = sigterm(&mut child);
    assert!(status.success(), "SIGTERM must end the server cleanly: {status:?}");

    let (mut child, lines, addr) = start_demo(&d);
    let all = lines.join("\n");
    assert!(all.contains("already exists"), "{all}");
    assert!(!all.contains("TOTP SECRET"), "credentials are printed only once");
    assert!(get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(sigterm(&mut child).success());
    let o = haven(&d).args(["admin", "list-users", "--org", "Riverside Clinic"]).output().unwrap();
    assert_eq!(
        text(&o).lines().filter(|l| l.contains(" active ") && l.contains(" yes ")).count(),
        6,
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn audit_export_verifies_offline_and_names_a_tampered_entry() {
    let d = temp_dir("audit");
    assert!(haven(&d).args(["admin", "create-org", "--name", "Audit Clinic"]).status().unwrap().success());
    for u in ["dr.one", "dr.two", "dr.three"] {
        let o = haven(&d)
            .args([
                "admin",
                "create-user",
                "--org",
                "Audit Clinic",
                "--username",
                u,
                "--display-name",
                "D",
                "--role",
                "clinician",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let kept = d.join("kept.note");
    let o = haven(&d).args(["audit", "checkpoint"]).output().unwrap();
    assert!(o.status.success());
    std::fs::write(&kept, &o.stdout).unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("haven/audit\n4\n"), "{}", text(&o));
    assert!(
        haven(&d)
            .args(["admin", "deactivate-user", "--org", "Audit Clinic", "--username", "dr.two"])
            .status()
            .unwrap()
            .success()
    );

    let export = d.join("export.txt");
    let o = haven(&d).args(["audit", "export", "--output", export.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("exported 5 entries (5 in full)"), "{}", text(&o));
    let exported = text(&o);
    // The verifier needs neither the data directory nor the database.
    let elsewhere = temp_dir("audit-elsewhere");
    let o = haven(&elsewhere)
        .args(["audit", "verify", export.to_str().unwrap(), "--checkpoint", kept.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).starts_with("OK: 5 entries"), "{}", text(&o));
    assert!(text(&o).contains("WARNING"), "an unpinned key is called out: {}", text(&o));
    assert!(!elsewhere.exists(), "verify touched no data directory");
    let key = exported.split("--key ").nth(1).unwrap().trim().to_owned();
    let o = haven(&elsewhere)
        .args(["audit", "verify", export.to_str().unwrap(), "--key", &key])
        .output()
        .unwrap();
    assert!(o.status.success() && !text(&o).contains("WARNING"), "{}", text(&o));
    // Change a character well inside the key's base64 (the last one may carry only padding
    // bits, and may already be the replacement).
    let at = key.len() - 10;
    let swap = if &key[at..=at] == "A" { "B" } else { "A" };
    let other_key = format!("{}{}{}", &key[..at], swap, &key[at + 1..]);
    assert_ne!(other_key, key);
    let o = haven(&elsewhere)
        .args(["audit", "verify", export.to_str().unwrap(), "--key", &other_key])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("other than the trusted one"), "{}", text(&o));

    let original = std::fs::read_to_string(&export).unwrap();
    let tampered = original.replacen("\"subtype\":\"user-deactivate\"", "\"subtype\":\"user-create\"", 1);
    assert_ne!(tampered, original);
    std::fs::write(&export, tampered).unwrap();
    let o = haven(&elsewhere).args(["audit", "verify", export.to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("FAILED: entry 5,"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn keys_rotate_adds_a_version_and_rewraps() {
    let d = temp_dir("keys");
    assert!(haven(&d).args(["admin", "create-org", "--name", "Key Clinic"]).status().unwrap().success());
    let o = haven(&d).args(["keys", "status"]).output().unwrap();
    assert!(text(&o).contains("current master key version: 1"), "{}", text(&o));
    let o = haven(&d).args(["keys", "rotate"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("added master key version 2"), "{}", text(&o));
    let key = std::fs::read_to_string(d.join("master.key")).unwrap();
    assert_eq!(key.lines().map(|l| l.split(':').next().unwrap()).collect::<Vec<_>>(), ["1", "2"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(d.join("master.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let o = haven(&d).args(["keys", "status"]).output().unwrap();
    assert!(text(&o).contains("current master key version: 2"), "{}", text(&o));
    let o = haven(&d)
        .env("HAVEN_KEYS_MASTER_KEY", key.lines().next().unwrap())
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("HAVEN_KEYS_MASTER_KEY"), "{}", text(&o));
}
