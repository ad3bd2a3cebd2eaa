//! The real binary serving, set up through its CLI: `kill -9` during a burst of sends loses no
//! acknowledged message and duplicates none; `haven client` drives the messaging API.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

const PASSWORD: &str = "plum-kettle-orbit-7291";

fn haven(data_dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_haven"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HAVEN_DATA_DIR", data_dir)
        .env("HAVEN_LOG_LEVEL", "error");
    c
}

fn ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn create_user(d: &std::path::Path, name: &str) {
    let mut child = haven(d)
        .args(["admin", "create-user", "--org", "Crash Clinic", "--username", name, "--display-name", name])
        .args(["--role", "clinician", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
}

/// A fresh data directory with an organisation (MFA not required) and users alice and bob,
/// set up through the CLI.
fn clinic(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("haven-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    ok(haven(&d).args(["admin", "create-org", "--name", "Crash Clinic"]));
    ok(haven(&d).args(["admin", "policy", "--org", "Crash Clinic", "--mfa-required", "false"]));
    create_user(&d, "alice");
    create_user(&d, "bob");
    d
}

#[allow(clippy::zombie_processes, reason = "the caller kills and waits for the child")]
fn serve(d: &std::path::Path) -> (Child, String) {
    let mut child = haven(d).args(["serve", "--bind", "127.0.0.1:0"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "server exited early");
        if let Some(addr) = line.trim_end().strip_prefix("Haven is listening on ") {
            return (child, addr.to_owned());
        }
    }
}

/// Sends a request (with a JSON body when given) and reads the JSON answer.
async fn call(http: &reqwest::Client, url: String, token: Option<&str>, body: Option<Value>) -> Value {
    let mut r = match &body {
        Some(b) => http.post(url).json(b),
        None => http.get(url),
    };
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().json().await.unwrap()
}

async fn login(http: &reqwest::Client, base: &str, user: &str) -> String {
    let body = json!({"username": user, "password": PASSWORD});
    let r = call(http, format!("{base}/api/v1/auth/login"), None, Some(body)).await;
    assert_eq!(r["state"], "active", "{r}");
    r["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_acknowledged_message() {
    let d = clinic("crash");

    let (mut server, base) = serve(&d);
    let http = reqwest::Client::new();
    let alice = login(&http, &base, "alice").await;
    let users = call(&http, format!("{base}/api/v1/users"), Some(&alice), None).await;
    let bob_id =
        users["users"].as_array().unwrap().iter().find(|u| u["username"] == "bob").unwrap()["id"].clone();
    let body = json!({"kind": "direct", "members": [bob_id]});
    let conv = call(&http, format!("{base}/api/v1/conversations"), Some(&alice), Some(body)).await;
    let conv = conv["id"].as_str().unwrap().to_owned();

    // Four senders send until the server dies; each remembers what was acknowledged.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (http, base, tok, conv, acked, count) =
            (http.clone(), base.clone(), alice.clone(), conv.clone(), acked.clone(), count.clone());
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("s{s}-{i}");
                let resp = http
                    .post(format!("{base}/api/v1/conversations/{conv}/messages"))
                    .bearer_auth(&tok)
                    .json(&json!({"idempotency_key": key, "body": format!("body {key}")}))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().push(key);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        }));
    }
    while count.load(Ordering::SeqCst) < 150 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150);

    let (mut server, base) = serve(&d);
    let alice = login(&http, &base, "alice").await;
    let mut bodies = Vec::new();
    let mut after = 0;
    loop {
        let url = format!("{base}/api/v1/conversations/{conv}/events?after={after}&limit=200");
        let page = call(&http, url, Some(&alice), None).await;
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        for e in events {
            assert_eq!(e["seq"].as_i64().unwrap(), after + 1, "gap-free after the crash");
            after += 1;
            if let Some(b) = e["message"]["body"].as_str() {
                bodies.push(b.to_owned());
            }
        }
    }
    for key in &acked {
        assert!(bodies.contains(&format!("body {key}")), "acknowledged message {key} was lost");
    }
    let mut unique = bodies.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), bodies.len(), "no message stored twice");
    // A client retrying an acknowledged send after the crash gets the first result back.
    let key = &acked[0];
    let r = http
        .post(format!("{base}/api/v1/conversations/{conv}/messages"))
        .bearer_auth(&alice)
        .json(&json!({"idempotency_key": key, "body": format!("body {key}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    println!("acknowledged {} before kill -9; {} stored; none lost", acked.len(), bodies.len());
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&d);
}

fn client(
    d: &std::path::Path,
    base: &str,
    token: Option<&str>,
    args: &[&str],
    stdin: &str,
) -> (bool, String) {
    let mut c = haven(d);
    c.env("HAVEN_URL", base)
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        c.env("HAVEN_TOKEN", t);
    }
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_subcommands_drive_the_api() {
    let d = clinic("client");
    let (mut server, base) = serve(&d);

    let (good, out) = client(&d, &base, None, &["login", "--username", "alice"], "wrong password\n");
    assert!(!good && out.contains("invalid_credentials"), "{out}");
    let (good, token) = client(&d, &base, None, &["login", "--username", "alice"], &format!("{PASSWORD}\n"));
    assert!(good, "{token}");
    let token = token.trim().to_owned();
    let t = Some(token.as_str());
    let (good, users) = client(&d, &base, t, &["users"], "");
    assert!(good, "{users}");
    let users: Value = serde_json::from_str(&users).unwrap();
    let bob = users["users"].as_array().unwrap().iter().find(|u| u["username"] == "bob").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (good, conv) = client(&d, &base, t, &["start", "--kind", "direct", "--member", &bob], "");
    assert!(good, "{conv}");
    let conv: Value = serde_json::from_str(&conv).unwrap();
    let conv = conv["id"].as_str().unwrap().to_owned();
    let (good, sent) = client(
        &d,
        &base,
        t,
        &["send", &conv, "-", "--priority", "urgent", "--key", "cli-1"],
        "from a script\n",
    );
    assert!(good, "{sent}");
    let (good, again) = client(&d, &base, t, &["send", &conv, "from a script\n", "--key", "cli-1"], "");
    assert!(good);
    let (a, b): (Value, Value) =
        (serde_json::from_str(&sent).unwrap(), serde_json::from_str(&again).unwrap());
    assert_eq!(a["message"]["id"], b["message"]["id"], "a retried key returns the first message");
    let file = d.join("note.txt");
    std::fs::write(&file, "discharge summary attached\n").unwrap();
    let (good, att) = client(&d, &base, t, &["upload", &conv, file.to_str().unwrap()], "");
    assert!(good, "{att}");
    let (good, history) = client(&d, &base, t, &["history", &conv], "");
    assert!(good, "{history}");
    let h: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(h["events"][1]["message"]["body"], "from a script\n");
    assert_eq!(h["events"][1]["message"]["priority"], "urgent");
    let (good, out) = client(&d, &base, t, &["send", &conv, " "], "");
    assert!(!good && out.contains("body_empty"), "bad input is a clear error: {out}");
    let (good, out) = client(&d, &base, None, &["conversations"], "");
    assert!(!good && out.contains("HAVEN_TOKEN"), "{out}");
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&d);
}
