//! Two `haven serve` nodes on one PostgreSQL database, joined by a real NATS server: a message
//! sent on one node reaches a socket held by the other, a sign-out on one closes the session's
//! socket on the other, and what crosses NATS holds ids only, never a message's content. A
//! cluster on SQLite is refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SUBJECT: &str = "haven.cluster-test";
const PASSWORD: &str = "orbit-kettle-plum-5521";
const CANARY: &str = "cluster canary 7f3a potassium 6.9";

/// Child processes killed (and a database dropped) when the test ends, also when it fails.
#[derive(Default)]
struct Cleanup {
    children: Vec<Child>,
    database: Option<(String, String)>,
    dir: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((admin, name)) = &self.database {
            let _ = psql(admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    Command::new("psql").args(["-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql]).output().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn haven(data_dir: &Path, database_url: &str, nats_url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_haven"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HAVEN_DATA_DIR", data_dir)
        .env("HAVEN_LOG_LEVEL", "warn")
        .env("HAVEN_DATABASE_URL", database_url)
        .env("HAVEN_CLUSTER_NATS_URL", nats_url)
        .env("HAVEN_CLUSTER_SUBJECT", SUBJECT);
    c
}

fn admin(cmd: &mut Command, args: &[&str], stdin: Option<&str>) {
    let mut child = cmd
        .arg("admin")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Starts a node; returns its base URL.
fn serve(cmd: &mut Command, cleanup: &mut Cleanup) -> String {
    let mut child = cmd
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    cleanup.children.push(child);
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the node exited before listening");
        if let Some(addr) = line.trim().strip_prefix("Haven is listening on ") {
            // Keep reading its stdout so the node never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return addr.to_owned();
        }
    }
}

/// A plain NATS subscriber on the cluster's subject that keeps every byte it reads.
fn eavesdrop(port: u16) -> Arc<Mutex<Vec<u8>>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("CONNECT {{\"verbose\":false}}\r\nSUB {SUBJECT} 1\r\nPING\r\n").as_bytes()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "NATS closed the connection");
        if line.starts_with("PONG") {
            break;
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            // Answer the server's keep-alive pings so it never drops this subscriber.
            if buf[..n].windows(4).any(|w| w == b"PING") {
                let _ = s.write_all(b"PONG\r\n");
            }
            kept.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    seen
}

/// POSTs `body` to `url` (as the holder of `token`, if any) and reads the JSON answer.
async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

async fn sign_in(http: &reqwest::Client, base: &str, name: &str) -> (String, String) {
    let body = json!({"username": name, "password": PASSWORD});
    let v = post(http, format!("{base}/api/v1/auth/login"), None, body).await;
    let token = v["token"].as_str().unwrap_or_else(|| panic!("no token: {v}")).to_owned();
    let me: Value =
        http.get(format!("{base}/api/v1/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    (me["id"].as_str().unwrap().to_owned(), token)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(base: &str, token: &str) -> Ws {
    let mut req = format!("{}/api/v1/ws", base.replace("http://", "ws://")).into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let resume = json!({"op": "resume", "positions": {}, "backfill": false}).to_string();
    ws.send(Message::text(resume)).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"ready\"") => return ws,
            Some(Ok(_)) => {}
            other => panic!("the socket ended before ready: {other:?}"),
        }
    }
}

/// The close code `ws` ends with, skipping any frames before it.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match next(ws).await {
            Message::Close(frame) => return frame.map(|f| u16::from(f.code)),
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("before the close: {other:?}"),
        }
    }
}

/// The next frame or close of `ws`, within 10 seconds.
async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("nothing arrived within 10 s")
        .expect("the socket ended")
        .expect("the socket failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_to_each_others_sockets_through_nats_with_ids_only() {
    let mut cleanup = Cleanup::default();
    let admin_url = std::env::var("HAVEN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("haven_cluster_{}", std::process::id());
    let out = psql(&admin_url, &format!("CREATE DATABASE {name}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cleanup.database = Some((admin_url.clone(), name.clone()));
    let database_url = format!("{}/{name}", &admin_url[..admin_url.rfind('/').unwrap()]);

    let port = free_port();
    let nats = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server)");
    cleanup.children.push(nats);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let nats_url = format!("nats://127.0.0.1:{port}");
    let heard = eavesdrop(port);

    // Both nodes share one data directory (its keys and blob store), as nodes share a volume.
    let dir = std::env::temp_dir().join(format!("haven-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    cleanup.dir = Some(dir.clone());
    let node = || haven(&dir, &database_url, &nats_url);
    admin(&mut node(), &["create-org", "--name", "Cluster Clinic"], None);
    admin(&mut node(), &["policy", "--org", "Cluster Clinic", "--mfa-required", "false"], None);
    for user in ["alice", "bob"] {
        let args = ["create-user", "--org", "Cluster Clinic", "--username", user, "--display-name", user];
        let pw = format!("{PASSWORD}\n");
        admin(&mut node(), &[&args[..], &["--role", "clinician", "--password-stdin"]].concat(), Some(&pw));
    }
    let a = serve(&mut node(), &mut cleanup);
    let b = serve(&mut node(), &mut cleanup);

    let http = reqwest::Client::new();
    let (_, alice) = sign_in(&http, &a, "alice").await;
    let (bob_id, bob) = sign_in(&http, &b, "bob").await;
    let mut bob_on_b = socket(&b, &bob).await;
    let mut alice_on_b = socket(&b, &alice).await;

    // Sent on node A, delivered on node B.
    let body = json!({"kind": "direct", "members": [bob_id]});
    let conv = post(&http, format!("{a}/api/v1/conversations"), Some(&alice), body).await;
    let conv_id = conv["id"].as_str().unwrap_or_else(|| panic!("no conversation: {conv}")).to_owned();
    let sent = http
        .post(format!("{a}/api/v1/conversations/{conv_id}/messages"))
        .bearer_auth(&alice)
        .json(&json!({"idempotency_key": "cluster-1", "body": CANARY}))
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success(), "{}", sent.text().await.unwrap());
    let arrived = loop {
        match next(&mut bob_on_b).await {
            Message::Text(t) if t.contains(CANARY) => break t.to_string(),
            Message::Text(_) => {}
            other => panic!("bob's socket on node B: {other:?}"),
        }
    };
    assert!(arrived.contains(&conv_id), "{arrived}");

    // A sign-out on node A closes the session's socket on node B.
    let out = http.post(format!("{a}/api/v1/auth/logout")).bearer_auth(&alice).send().await.unwrap();
    assert!(out.status().is_success(), "{}", out.status());
    assert_eq!(close_code(&mut alice_on_b).await, Some(4001), "the session's socket was not closed");

    // NATS carried the conversation's id, never the message's content.
    std::thread::sleep(Duration::from_millis(200));
    let heard = String::from_utf8_lossy(&heard.lock().unwrap()).into_owned();
    assert!(heard.contains(&format!("MSG {SUBJECT}")), "nothing crossed NATS: {heard}");
    assert!(heard.contains(&conv_id), "no hint of the conversation crossed NATS: {heard}");
    assert!(!heard.contains("canary") && !heard.contains("potassium"), "content crossed NATS: {heard}");

    // Without NATS, node B would hear nothing from node A: its sockets close (as too slow, 4008),
    // and their clients resume.
    let mut nats = cleanup.children.remove(0);
    nats.kill().unwrap();
    nats.wait().unwrap();
    let code = close_code(&mut bob_on_b).await;
    assert_eq!(code, Some(4008), "the socket was not closed when NATS went away");
}

#[test]
fn a_cluster_on_sqlite_is_refused() {
    let dir = std::env::temp_dir().join(format!("haven-cluster-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_haven"))
        .env_clear()
        .env("HAVEN_DATA_DIR", &dir)
        .env("HAVEN_CLUSTER_NATS_URL", "nats://127.0.0.1:1")
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("several nodes need one PostgreSQL database"), "{text}");
}
