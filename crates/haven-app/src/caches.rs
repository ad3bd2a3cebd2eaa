//! What a node keeps in memory so a busy request path does not read the database for facts it
//! read a moment ago: live sessions by token digest, and the patient a conversation is about.
//!
//! Sessions: an entry is used only while the store's auth epoch is the one read before the
//! session was (any change to sessions, users, roles or policies on this node moves it, so a
//! sign-out, deactivation, role change or MFA reset takes effect at once here), and for at most
//! [`SESSION_TTL`], which bounds how long a change made on another node can go unseen here.
//! A conversation's patient never changes once the conversation exists, so that entry needs
//! no expiry; membership is still checked in the transaction of every send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use haven_domain::{ConversationId, OrgId, PatientId};
use haven_store::SessionRecord;
use jiff::Timestamp;

/// How long a cached session may be used without reading it again.
pub const SESSION_TTL: Duration = Duration::from_secs(1);
/// Entries kept before a cache starts afresh (a bound on memory, not a working-set size).
const MAX_ENTRIES: usize = 100_000;

struct CachedSession {
    record: SessionRecord,
    epoch: u64,
    fetched: Instant,
}

/// The node's caches.
#[derive(Default)]
pub(crate) struct Caches {
    sessions: Mutex<HashMap<String, CachedSession>>,
    patients: Mutex<HashMap<ConversationId, (OrgId, Option<PatientId>)>>,
}

impl Caches {
    /// The session of `digest` if it was read at `epoch` less than [`SESSION_TTL`] ago.
    pub(crate) fn session(&self, digest: &str, epoch: u64) -> Option<SessionRecord> {
        let map = self.sessions.lock().expect("session cache");
        map.get(digest)
            .filter(|e| e.epoch == epoch && e.fetched.elapsed() < SESSION_TTL)
            .map(|e| e.record.clone())
    }

    /// Keeps `record`, read from the store after the auth epoch was `epoch`.
    pub(crate) fn keep_session(&self, digest: &str, record: SessionRecord, epoch: u64) {
        let mut map = self.sessions.lock().expect("session cache");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(digest.to_owned(), CachedSession { record, epoch, fetched: Instant::now() });
    }

    /// Notes activity recorded on a cached session.
    pub(crate) fn session_touched(&self, digest: &str, at: Timestamp) {
        if let Some(e) = self.sessions.lock().expect("session cache").get_mut(digest) {
            e.record.last_seen_at = at;
        }
    }

    /// The patient of conversation `conv` of `org`, if known here.
    pub(crate) fn patient_of(&self, org: OrgId, conv: ConversationId) -> Option<Option<PatientId>> {
        let map = self.patients.lock().expect("conversation cache");
        map.get(&conv).filter(|(o, _)| *o == org).map(|(_, p)| *p)
    }

    /// Keeps the patient of conversation `conv` of `org`.
    pub(crate) fn keep_patient_of(&self, org: OrgId, conv: ConversationId, patient: Option<PatientId>) {
        let mut map = self.patients.lock().expect("conversation cache");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(conv, (org, patient));
    }
}
