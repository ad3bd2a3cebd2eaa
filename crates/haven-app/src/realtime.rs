//! Real-time fan-out. Use cases publish to a [`Bus`]; every node's [`Hub`] hands what it
//! receives to the sockets of the users concerned, through bounded per-socket queues. A socket
//! whose queue is full is dropped from the hub (its connection closes and the client resumes
//! from its last positions), so one slow client never stalls delivery to the others.
//!
//! [`LocalBus`] delivers in-process (one node). A bus between nodes (NATS) carries only ids,
//! never content: it turns each `Outbound::Event` into an `Outbound::Hint` (conversation and
//! sequence number) for the other nodes, whose sockets read the event from the shared database,
//! so no PHI crosses the broker. Receipts and session ends are ids already. Events carry their conversation sequence number, and
//! each socket delivers in sequence order, filling any gap from the database, so delivery order
//! never depends on the bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use haven_domain::{ConversationId, SessionId, UserId};
use tokio::sync::mpsc;

/// Something sent to one socket.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// An event of a conversation, at its sequence number, as a JSON frame.
    Event {
        /// The conversation.
        conversation: ConversationId,
        /// Its sequence number.
        seq: i64,
        /// The frame, shared by every recipient.
        json: Arc<str>,
    },
    /// An event exists at `seq` but arrives without its frame (from another node: a bus
    /// between nodes carries ids, never content); the socket reads it from the database.
    Hint {
        /// The conversation.
        conversation: ConversationId,
        /// The sequence number committed.
        seq: i64,
    },
    /// A frame outside the sequence (receipts).
    Notice {
        /// The frame.
        json: Arc<str>,
    },
    /// The session ended: close the socket with this reason.
    Close {
        /// A stable reason (`session_ended`).
        reason: &'static str,
    },
}

/// What travels on the bus.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// Deliver to these users' sockets.
    Deliver {
        /// Recipients.
        recipients: Vec<UserId>,
        /// What to deliver.
        out: Outbound,
    },
    /// A user's sessions ended: close their sockets.
    SessionsEnded {
        /// The user.
        user: UserId,
        /// Only this session (none: all of them).
        only: Option<SessionId>,
        /// All but this session.
        except: Option<SessionId>,
    },
    /// Another node failed to relay something: every socket here resumes to catch up.
    Resync,
}

/// Carries events to every node's hub.
pub trait Bus: Send + Sync {
    /// Publishes after the change is committed. Never blocks on a slow socket.
    fn publish(&self, msg: BusMessage);
}

/// Why a frame from another node was not understood.
#[derive(Debug, thiserror::Error)]
#[error("not a bus frame: {0}")]
pub struct WireError(String);

/// What one node tells the others, as it travels between them: ids and positions only. An
/// event's frame (which holds content) is never here; the receiving node reads the event from
/// the shared database.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    /// An event was committed at `seq` of conversation `c`, for the sockets of `to`.
    Hint { to: Vec<UserId>, c: ConversationId, s: i64 },
    /// A receipt frame (a conversation, a user and two positions) for the sockets of `to`.
    Receipt { to: Vec<UserId>, receipt: ReceiptWire },
    /// Close the sockets of `to`: their session ended.
    Close { to: Vec<UserId> },
    /// A user's sessions ended.
    Ended { u: UserId, only: Option<SessionId>, except: Option<SessionId> },
    /// The sender lost messages on their way to the other nodes.
    Resync,
}

/// A receipt notice's frame, parsed, so that only its ids and positions cross the bus.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ReceiptWire {
    conversation_id: ConversationId,
    user_id: UserId,
    delivered_seq: i64,
    read_seq: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ReceiptFrame {
    op: String,
    receipt: ReceiptWire,
}

impl BusMessage {
    /// This message as another node receives it: an event becomes a hint (no content), and a
    /// notice is re-encoded from its ids and positions. `None` for a notice that is not a
    /// receipt, which stays on this node.
    pub fn to_wire(&self) -> Option<Vec<u8>> {
        let wire = match self {
            Self::Deliver { recipients, out } => {
                let to = recipients.clone();
                match out {
                    Outbound::Event { conversation, seq, .. } | Outbound::Hint { conversation, seq } => {
                        Wire::Hint { to, c: *conversation, s: *seq }
                    }
                    Outbound::Notice { json } => {
                        let frame: ReceiptFrame = serde_json::from_str(json).ok()?;
                        Wire::Receipt { to, receipt: frame.receipt }
                    }
                    Outbound::Close { .. } => Wire::Close { to },
                }
            }
            Self::SessionsEnded { user, only, except } => {
                Wire::Ended { u: *user, only: *only, except: *except }
            }
            Self::Resync => Wire::Resync,
        };
        Some(serde_json::to_vec(&wire).expect("ids serialise"))
    }

    /// Reads what another node sent.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, WireError> {
        // serde's message may quote the input: only its kind and place are kept.
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| WireError(format!("{:?} error at column {}", e.classify(), e.column())))?;
        Ok(match wire {
            Wire::Hint { to, c, s } => {
                Self::Deliver { recipients: to, out: Outbound::Hint { conversation: c, seq: s } }
            }
            Wire::Receipt { to, receipt } => {
                let frame = ReceiptFrame { op: "receipt".into(), receipt };
                let json = Arc::from(serde_json::to_string(&frame).expect("ids serialise"));
                Self::Deliver { recipients: to, out: Outbound::Notice { json } }
            }
            Wire::Close { to } => {
                Self::Deliver { recipients: to, out: Outbound::Close { reason: "session_ended" } }
            }
            Wire::Ended { u, only, except } => Self::SessionsEnded { user: u, only, except },
            Wire::Resync => Self::Resync,
        })
    }
}

/// The bus of a node among several: this node's own sockets get every message at once, with
/// its content; the other nodes get it in its wire form (`BusMessage::to_wire`) through the
/// queue whose other end a transport (NATS) drains.
#[derive(Debug)]
pub struct RelayBus {
    hub: Arc<Hub>,
    out: mpsc::Sender<Vec<u8>>,
    loss: Loss,
}

/// Whether something may not have reached the other nodes since the last resync: set by a
/// relay whose queue was full, by a publish that failed, and by a reconnection (whatever was in
/// flight on the old connection is gone); taken by the transport, which then sends a resync.
#[derive(Debug, Clone, Default)]
pub struct Loss(Arc<AtomicBool>);

impl Loss {
    /// Records a loss (once in the log until the next resync).
    pub fn record(&self) {
        metrics::counter!("haven_bus_dropped_total").increment(1);
        if !self.0.swap(true, Ordering::SeqCst) {
            tracing::warn!("a message may not have reached the other nodes: their sockets will resume");
        }
    }

    /// Whether a loss was recorded since the last call; clears it.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// The other end of a [`RelayBus`]: what to send to the other nodes, in order, and the record
/// of what may not have reached them.
#[derive(Debug)]
pub struct Outgoing {
    /// Messages in their wire form, in order.
    pub rx: mpsc::Receiver<Vec<u8>>,
    /// Set when something may not have reached the other nodes: the transport sends
    /// [`BusMessage::Resync`] (`Outgoing::RESYNC`) before anything else, and at once.
    pub loss: Loss,
}

impl Outgoing {
    /// The wire form of [`BusMessage::Resync`].
    pub const RESYNC: &'static [u8] = br#"{"t":"resync"}"#;
}

impl RelayBus {
    /// A relay in front of `hub`, queueing up to `capacity` messages for the other nodes.
    pub fn new(hub: Arc<Hub>, capacity: usize) -> (Self, Outgoing) {
        let (out, rx) = mpsc::channel(capacity.max(1));
        let loss = Loss::default();
        (Self { hub, out, loss: loss.clone() }, Outgoing { rx, loss })
    }
}

impl Bus for RelayBus {
    fn publish(&self, msg: BusMessage) {
        let wire = msg.to_wire();
        self.hub.apply(msg);
        if let Some(bytes) = wire
            && self.out.try_send(bytes).is_err()
        {
            // The other nodes' sockets would learn of it only with the next event of its
            // conversation: the transport tells them to resume instead.
            self.loss.record();
        }
    }
}

/// The bus of a single node: straight into the local hub.
#[derive(Debug, Clone)]
pub struct LocalBus(pub Arc<Hub>);

impl Bus for LocalBus {
    fn publish(&self, msg: BusMessage) {
        self.0.apply(msg);
    }
}

struct Socket {
    id: u64,
    session: SessionId,
    tx: mpsc::Sender<Outbound>,
}

/// The sockets connected to this node, by user.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<HubInner>,
    queue: usize,
}

#[derive(Default)]
struct HubInner {
    next_id: u64,
    by_user: HashMap<UserId, Vec<Socket>>,
    count: usize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("sockets", &self.connections()).finish()
    }
}

/// A socket's registration: its queue, and its id for unregistering.
#[derive(Debug)]
pub struct Registration {
    /// The socket's id in the hub.
    pub id: u64,
    /// What to send; ends when the hub drops the socket (too slow) or the session ends.
    pub rx: mpsc::Receiver<Outbound>,
}

impl Hub {
    /// A hub whose sockets each queue up to `queue` frames.
    pub fn new(queue: usize) -> Self {
        Self { inner: Mutex::default(), queue: queue.max(1) }
    }

    /// Registers a socket of `user` on `session`.
    pub fn register(&self, user: UserId, session: SessionId) -> Registration {
        let (tx, rx) = mpsc::channel(self.queue);
        let mut inner = self.inner.lock().expect("hub lock");
        inner.next_id += 1;
        let id = inner.next_id;
        inner.by_user.entry(user).or_default().push(Socket { id, session, tx });
        inner.count += 1;
        metrics::gauge!("haven_websockets").set(inner.count as f64);
        Registration { id, rx }
    }

    /// Removes a socket (when its connection ends).
    pub fn unregister(&self, user: UserId, id: u64) {
        let mut inner = self.inner.lock().expect("hub lock");
        inner.remove(user, |s| s.id == id);
    }

    /// How many sockets are registered.
    pub fn connections(&self) -> usize {
        self.inner.lock().expect("hub lock").count
    }

    /// Closes every socket as if it were too slow, so each client resumes from its positions:
    /// for when this node may have missed messages from the others (its bus reconnected).
    pub fn drop_all(&self) {
        let mut inner = self.inner.lock().expect("hub lock");
        inner.by_user.clear();
        inner.count = 0;
        metrics::gauge!("haven_websockets").set(0.0);
    }

    /// Applies a bus message to the local sockets.
    pub fn apply(&self, msg: BusMessage) {
        let mut inner = self.inner.lock().expect("hub lock");
        match msg {
            BusMessage::Deliver { recipients, out } => {
                for user in recipients {
                    let mut slow = Vec::new();
                    if let Some(sockets) = inner.by_user.get(&user) {
                        for s in sockets {
                            if s.tx.try_send(out.clone()).is_err() {
                                slow.push(s.id);
                            }
                        }
                    }
                    if !slow.is_empty() {
                        metrics::counter!("haven_websocket_overflows_total").increment(slow.len() as u64);
                        inner.remove(user, |s| slow.contains(&s.id));
                    }
                }
            }
            BusMessage::SessionsEnded { user, only, except } => {
                let ends = |s: &Socket| only.is_none_or(|o| o == s.session) && except != Some(s.session);
                if let Some(sockets) = inner.by_user.get(&user) {
                    for s in sockets.iter().filter(|s| ends(s)) {
                        let _ = s.tx.try_send(Outbound::Close { reason: "session_ended" });
                    }
                }
                inner.remove(user, ends);
            }
            BusMessage::Resync => {
                drop(inner);
                self.drop_all();
            }
        }
    }
}

impl HubInner {
    fn remove(&mut self, user: UserId, which: impl Fn(&Socket) -> bool) {
        if let Some(sockets) = self.by_user.get_mut(&user) {
            let before = sockets.len();
            sockets.retain(|s| !which(s));
            self.count -= before - sockets.len();
            if sockets.is_empty() {
                self.by_user.remove(&user);
            }
        }
        metrics::gauge!("haven_websockets").set(self.count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(n: u8) -> UserId {
        format!("00000000-0000-4000-8000-0000000000{n:02x}").parse().unwrap()
    }
    fn sid(n: u8) -> SessionId {
        format!("00000000-0000-4000-8000-0000000001{n:02x}").parse().unwrap()
    }
    fn event(seq: i64) -> Outbound {
        let conversation = "00000000-0000-4000-8000-000000000999".parse().unwrap();
        Outbound::Event { conversation, seq, json: Arc::from("{}") }
    }

    #[test]
    fn only_ids_and_positions_cross_between_nodes() {
        let conversation: ConversationId = "00000000-0000-4000-8000-000000000999".parse().unwrap();
        let content =
            Outbound::Event { conversation, seq: 7, json: Arc::from(r#"{"body":"potassium 6.9"}"#) };
        let wire = BusMessage::Deliver { recipients: vec![uid(1)], out: content }.to_wire().unwrap();
        assert!(!String::from_utf8_lossy(&wire).contains("potassium"));
        match BusMessage::from_wire(&wire).unwrap() {
            BusMessage::Deliver { recipients, out: Outbound::Hint { conversation: c, seq: 7 } } => {
                assert_eq!((recipients, c), (vec![uid(1)], conversation));
            }
            other => panic!("{other:?}"),
        }
        // A receipt crosses as its ids and positions; anything else added to its frame stays.
        let receipt = format!(
            r#"{{"op":"receipt","receipt":{{"conversation_id":"{conversation}","user_id":"{}","delivered_seq":3,"read_seq":2,"extra":"x"}}}}"#,
            uid(2)
        );
        let out = Outbound::Notice { json: Arc::from(receipt.as_str()) };
        let wire = BusMessage::Deliver { recipients: vec![uid(1)], out }.to_wire().unwrap();
        let Ok(BusMessage::Deliver { out: Outbound::Notice { json }, .. }) = BusMessage::from_wire(&wire)
        else {
            panic!("not a notice")
        };
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!((v["op"].as_str(), v["receipt"]["read_seq"].as_i64()), (Some("receipt"), Some(2)));
        assert!(v["receipt"].get("extra").is_none());
        // A notice that is not a receipt stays on its node; garbage is refused.
        let other = Outbound::Notice { json: Arc::from(r#"{"op":"typing"}"#) };
        assert!(BusMessage::Deliver { recipients: vec![], out: other }.to_wire().is_none());
        assert!(BusMessage::from_wire(b"{\"t\":\"event\",\"body\":\"x\"}").is_err());
        let ended = BusMessage::SessionsEnded { user: uid(1), only: Some(sid(1)), except: None };
        let back = BusMessage::from_wire(&ended.to_wire().unwrap()).unwrap();
        assert!(matches!(back, BusMessage::SessionsEnded { only: Some(s), except: None, .. } if s == sid(1)));
    }

    #[tokio::test]
    async fn a_relay_gives_its_own_hub_the_content_and_the_other_nodes_ids() {
        let hub = Arc::new(Hub::new(16));
        let mut mine = hub.register(uid(1), sid(1));
        let (relay, mut others) = RelayBus::new(hub.clone(), 2);
        relay.publish(BusMessage::Deliver { recipients: vec![uid(1)], out: event(5) });
        assert!(matches!(mine.rx.recv().await, Some(Outbound::Event { seq: 5, .. })));
        let wire = others.rx.recv().await.unwrap();
        assert!(matches!(
            BusMessage::from_wire(&wire),
            Ok(BusMessage::Deliver { out: Outbound::Hint { seq: 5, .. }, .. })
        ));
        // A full queue loses a message: the loss is recorded (once) for the transport to take.
        for seq in 6..=8 {
            relay.publish(BusMessage::Deliver { recipients: vec![uid(1)], out: event(seq) });
        }
        assert!(others.loss.take());
        assert!(!others.loss.take(), "taken once");
        let heard = |w: Vec<u8>| BusMessage::from_wire(&w).unwrap();
        assert!(matches!(
            heard(others.rx.recv().await.unwrap()),
            BusMessage::Deliver { out: Outbound::Hint { seq: 6, .. }, .. }
        ));
        assert!(matches!(
            heard(others.rx.recv().await.unwrap()),
            BusMessage::Deliver { out: Outbound::Hint { seq: 7, .. }, .. }
        ));
        assert!(matches!(heard(Outgoing::RESYNC.to_vec()), BusMessage::Resync));
        assert_eq!(BusMessage::Resync.to_wire().unwrap(), Outgoing::RESYNC);
        others.loss.record();
        assert!(others.loss.take());
        // A resync closes every socket here, so each client resumes.
        hub.apply(BusMessage::Resync);
        let mut got = Vec::new();
        while let Some(o) = mine.rx.recv().await {
            got.push(o);
        }
        assert_eq!(got.len(), 3, "the queued events (6 to 8), then the end of the queue");
        assert_eq!(hub.connections(), 0);
    }

    #[tokio::test]
    async fn a_slow_socket_is_dropped_without_holding_up_others() {
        let hub = Hub::new(2);
        let mut slow = hub.register(uid(1), sid(1));
        let mut fast = hub.register(uid(2), sid(2));
        for seq in 1..=3 {
            hub.apply(BusMessage::Deliver { recipients: vec![uid(1), uid(2)], out: event(seq) });
            if let Some(Outbound::Event { seq: got, .. }) = fast.rx.recv().await {
                assert_eq!(got, seq);
            } else {
                panic!("the fast socket missed {seq}");
            }
        }
        // The slow socket got what fitted, then its queue closed: it must resume.
        assert!(matches!(slow.rx.recv().await, Some(Outbound::Event { seq: 1, .. })));
        assert!(matches!(slow.rx.recv().await, Some(Outbound::Event { seq: 2, .. })));
        assert!(slow.rx.recv().await.is_none());
        assert_eq!(hub.connections(), 1);
    }

    #[tokio::test]
    async fn ending_a_session_closes_only_its_sockets() {
        let hub = Hub::new(8);
        let mut a = hub.register(uid(1), sid(1));
        let mut b = hub.register(uid(1), sid(2));
        hub.apply(BusMessage::SessionsEnded { user: uid(1), only: Some(sid(1)), except: None });
        assert!(matches!(a.rx.recv().await, Some(Outbound::Close { reason: "session_ended" })));
        assert!(a.rx.recv().await.is_none());
        assert!(b.rx.try_recv().is_err());
        hub.apply(BusMessage::SessionsEnded { user: uid(1), only: None, except: Some(sid(2)) });
        assert_eq!(hub.connections(), 1);
        hub.apply(BusMessage::SessionsEnded { user: uid(1), only: None, except: None });
        assert!(matches!(b.rx.recv().await, Some(Outbound::Close { .. })));
        assert_eq!(hub.connections(), 0);
    }
}
