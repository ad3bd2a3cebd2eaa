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
}

/// Carries events to every node's hub.
pub trait Bus: Send + Sync {
    /// Publishes after the change is committed. Never blocks on a slow socket.
    fn publish(&self, msg: BusMessage);
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
