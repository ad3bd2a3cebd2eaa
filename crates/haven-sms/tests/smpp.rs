//! The SMPP gateway against a real SMSC peer: `tests/smsc/smsc.js`, a small SMSC built on the
//! npm `smpp` package's server (see that file for its behaviour and control commands).
//! Needs Node.js and `npm ci --prefix tests/smsc`; without them these tests fail.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use haven_sms::smpp::{PROVIDER, Smpp, SmppConfig};
use haven_sms::{
    DeliveryState, GatewayError, GatewayEvent, InboundSms, OutboundSms, SmsGateway, StatusReport,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Every test fails rather than hangs.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(10);
const OUR_NUMBER: &str = "+15550001111";
const PASSWORD: &str = "secret1";

/// The test SMSC, killed on drop.
struct Smsc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    port: u16,
}

impl Smsc {
    async fn start() -> Smsc {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/smsc");
        let fix = "run `npm ci --prefix tests/smsc` from the workspace root";
        assert!(
            dir.join("node_modules/smpp/package.json").is_file(),
            "the test SMSC's node_modules are missing: {fix}"
        );
        let mut child = Command::new("node")
            .arg("smsc.js")
            .arg("0")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node` ({e}): install Node.js and {fix}"));
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first =
            tokio::time::timeout(WAIT, lines.recv()).await.ok().flatten().expect("the SMSC did not start");
        let port = first.strip_prefix("LISTENING ").and_then(|p| p.parse().ok()).expect(&first);
        Smsc { child, stdin, lines, port }
    }

    async fn call(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let line = tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .ok()
            .flatten()
            .expect("the SMSC did not answer");
        let answer: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["ok"], true, "{request} -> {answer}");
        answer
    }

    async fn submissions(&mut self) -> Vec<Value> {
        self.call(json!({"cmd": "submissions"})).await["submissions"].as_array().unwrap().clone()
    }

    async fn bound(&mut self) -> u64 {
        self.call(json!({"cmd": "bound"})).await["bound"].as_u64().unwrap()
    }

    /// Sends a text from a patient; returns the deliver_sm_resp's command_status.
    async fn mo(&mut self, from: &str, text: &str, coding: &str) -> u64 {
        let to = &OUR_NUMBER[1..];
        let answer =
            self.call(json!({"cmd": "mo", "from": from, "to": to, "text": text, "coding": coding})).await;
        answer["status"].as_u64().unwrap()
    }

    fn config(&self, password: &str) -> SmppConfig {
        config(self.port, password)
    }
}

fn config(port: u16, password: &str) -> SmppConfig {
    SmppConfig {
        host: "127.0.0.1".into(),
        port,
        system_id: "haven".into(),
        password: password.into(),
        system_type: String::new(),
        source_addr: OUR_NUMBER.into(),
        source_addr_ton: 1,
        source_addr_npi: 1,
        dest_addr_ton: 1,
        dest_addr_npi: 1,
        enquire_link_secs: 30,
    }
}

impl Drop for Smsc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn within<F: Future<Output = ()>>(test: F) {
    capture_logs();
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("the test took longer than 20 s");
}

fn sms(to: &str, body: &str) -> OutboundSms {
    // Like an outbox row id: nothing that identifies the patient.
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let id = format!("text-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    OutboundSms { id, to: to.into(), body: body.into(), status_callback: None }
}

/// Sends once the gateway has bound: Unavailable is what a send says until then.
async fn send_when_bound(gateway: &Smpp, sms: &OutboundSms) -> Result<String, GatewayError> {
    let deadline = Instant::now() + WAIT;
    loop {
        match gateway.send(sms).await {
            Err(GatewayError::Unavailable(e)) if Instant::now() < deadline => {
                assert!(e.contains("not bound"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.map(|a| a.provider_id),
        }
    }
}

async fn next_event(events: &mut mpsc::Receiver<GatewayEvent>) -> GatewayEvent {
    tokio::time::timeout(WAIT, events.recv()).await.ok().flatten().expect("no event from the gateway")
}

/// The receipt for `provider_id`, skipping receipts for other texts.
async fn receipt(events: &mut mpsc::Receiver<GatewayEvent>, provider_id: &str) -> StatusReport {
    loop {
        match next_event(events).await {
            GatewayEvent::Status(s) if s.provider_id == provider_id => return s,
            GatewayEvent::Status(_) => {}
            GatewayEvent::Inbound(i) => panic!("unexpected inbound text {i:?}"),
        }
    }
}

async fn inbound(events: &mut mpsc::Receiver<GatewayEvent>) -> InboundSms {
    loop {
        match next_event(events).await {
            GatewayEvent::Inbound(sms) => return sms,
            GatewayEvent::Status(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_makes_sends_fail_as_misconfigured() {
    within(async {
        let mut smsc = Smsc::start().await;
        let (tx, _events) = mpsc::channel(16);
        let gateway = Smpp::start(smsc.config("wrong"), tx);
        match send_when_bound(&gateway, &sms("+15557654321", "hello")).await {
            Err(GatewayError::Config(e)) => assert!(e.contains("0x0000000d"), "{e}"),
            other => panic!("expected a Config error, got {other:?}"),
        }
        assert_eq!(smsc.bound().await, 0);
        assert!(smsc.submissions().await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bind_sends_fail_at_once_as_unavailable() {
    within(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (tx, _events) = mpsc::channel(16);
        let gateway = Smpp::start(config(port, PASSWORD), tx);
        for pause in [0, 1500] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let started = Instant::now();
            let result = gateway.send(&sms("+15557654321", "hello")).await;
            assert!(matches!(result, Err(GatewayError::Unavailable(_))), "{result:?}");
            assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_are_submitted_intact_and_their_receipts_come_back() {
    within(async {
        let mut smsc = Smsc::start().await;
        let (tx, mut events) = mpsc::channel(16);
        let gateway = Smpp::start(smsc.config(PASSWORD), tx);

        let bodies = [
            "Your code is 123456. Reply STOP to opt out.",
            "¿Confirma su cita de mañana? Responda SÍ o NO.",
            // Longer than one UCS-2 SMS: travels in message_payload.
            "Recordatorio: su cita en la clínica es el miércoles a las 9:30. Traiga su identificación, \
             la lista de medicamentos y llegue 15 minutos antes. ¡Gracias!",
        ];
        for (i, body) in bodies.iter().enumerate() {
            let to = format!("+1555765432{i}");
            let id = send_when_bound(&gateway, &sms(&to, body)).await.expect("accepted");
            let recorded = smsc.submissions().await;
            let last = recorded.last().unwrap();
            assert_eq!(recorded.len(), i + 1);
            assert_eq!(last["message_id"], id.as_str());
            assert_eq!(last["destination"], &to[1..]);
            assert_eq!(last["text"], *body);
            assert_eq!(last["source"], &OUR_NUMBER[1..]);
            assert_eq!((&last["dest_addr_ton"], &last["dest_addr_npi"]), (&json!(1), &json!(1)));
            let report = receipt(&mut events, &id).await;
            assert_eq!(
                report,
                StatusReport {
                    provider: PROVIDER,
                    provider_id: id,
                    state: DeliveryState::Delivered,
                    error_code: None
                }
            );
        }

        let id = send_when_bound(&gateway, &sms("+15557650000", "hello")).await.expect("accepted");
        let report = receipt(&mut events, &id).await;
        assert_eq!((report.state, report.error_code.as_deref()), (DeliveryState::Undelivered, Some("001")));

        match gateway.send(&sms("+15557659999", "hello")).await {
            Err(GatewayError::Refused { code }) => assert_eq!(code, "0x0000000b"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(smsc.submissions().await.len(), bodies.len() + 1, "the refused text is not recorded");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_from_patients_arrive_with_their_sender_and_body() {
    within(async {
        let mut smsc = Smsc::start().await;
        let (tx, mut events) = mpsc::channel(16);
        let gateway = Smpp::start(smsc.config(PASSWORD), tx);
        send_when_bound(&gateway, &sms("+15557654321", "hi")).await.expect("bound");

        let spanish = "Sí, confirmo. ¿A qué hora abren el miércoles?";
        assert_eq!(smsc.mo("15557654321", spanish, "ucs2").await, 0, "deliver_sm_resp is ESME_ROK");
        let first = inbound(&mut events).await;
        assert_eq!(first.provider, PROVIDER);
        assert_eq!((first.from.as_str(), first.to.as_str()), ("+15557654321", OUR_NUMBER));
        assert_eq!(first.body, spanish);

        assert_eq!(smsc.mo("15557654321", spanish, "ucs2").await, 0);
        let again = inbound(&mut events).await;
        assert_eq!(again.provider_id, first.provider_id, "a redelivered text keeps its id");

        smsc.mo("15557654321", "Sí", "latin1").await;
        let latin1 = inbound(&mut events).await;
        assert_eq!(latin1.body, "Sí");
        smsc.mo("15557654322", "STOP @ once", "default").await;
        let gsm = inbound(&mut events).await;
        assert_eq!((gsm.from.as_str(), gsm.body.as_str()), ("+15557654322", "STOP @ once"));
        assert_ne!(gsm.provider_id, first.provider_id);
        assert_ne!(latin1.provider_id, first.provider_id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_rebinds_by_itself_after_the_smsc_drops_it() {
    within(async {
        let mut smsc = Smsc::start().await;
        let (tx, mut events) = mpsc::channel(16);
        let gateway = Smpp::start(smsc.config(PASSWORD), tx);
        let before = send_when_bound(&gateway, &sms("+15557654321", "before")).await.expect("accepted");
        receipt(&mut events, &before).await;

        assert_eq!(smsc.call(json!({"cmd": "drop"})).await["dropped"], 1);
        let deadline = Instant::now() + WAIT;
        while smsc.bound().await != 0 {
            assert!(Instant::now() < deadline, "the SMSC still counts the dropped bind");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while smsc.bound().await != 1 {
            assert!(Instant::now() < deadline, "the gateway did not bind again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after =
            send_when_bound(&gateway, &sms("+15557654321", "after")).await.expect("accepted after rebinding");
        assert_ne!(after, before);
        assert_eq!(receipt(&mut events, &after).await.state, DeliveryState::Delivered);
        smsc.mo("15557654321", "still here", "default").await;
        assert_eq!(inbound(&mut events).await.body, "still here");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_gateway_unbinds_and_stops_reconnecting() {
    within(async {
        let mut smsc = Smsc::start().await;
        let (tx, _events) = mpsc::channel(16);
        let gateway = Smpp::start(smsc.config(PASSWORD), tx);
        send_when_bound(&gateway, &sms("+15557654321", "hi")).await.expect("accepted");
        assert_eq!(smsc.bound().await, 1);
        drop(gateway);
        let deadline = Instant::now() + WAIT;
        while smsc.bound().await != 0 {
            assert!(Instant::now() < deadline, "the dropped gateway is still bound");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Longer than the first reconnect delay: nothing comes back.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(smsc.bound().await, 0, "the dropped gateway bound again");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_numbers_bodies_or_password() {
    within(async {
        let mut smsc = Smsc::start().await;
        let (tx, mut events) = mpsc::channel(16);
        let gateway = Smpp::start(smsc.config(PASSWORD), tx);
        let id = send_when_bound(&gateway, &sms("+15553217777", "Body-marker-4411")).await.expect("accepted");
        receipt(&mut events, &id).await;
        smsc.mo("15553218888", "Reply-marker-5522", "default").await;
        let mo = inbound(&mut events).await;
        drop(gateway);

        let logs = String::from_utf8(LOGS.get().unwrap().lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains(&id) && logs.contains(&mo.provider_id),
            "ids are logged at debug level:\n{logs}"
        );
        for secret in ["15553217777", "Body-marker-4411", "15553218888", "Reply-marker-5522", PASSWORD] {
            assert!(!logs.contains(secret), "{secret} was logged:\n{logs}");
        }
    })
    .await;
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged by every test, at every level, from every crate.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    });
}
