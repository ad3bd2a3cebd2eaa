//! What a node keeps in memory so a busy request path does not read the database for facts it
//! read before: the patient a conversation is about. A conversation's patient never changes
//! once the conversation exists, so an entry needs no expiry; membership is still checked in
//! the transaction of every send.

use std::collections::HashMap;
use std::sync::Mutex;

use haven_domain::{ConversationId, OrgId, PatientId};

/// Entries kept before a cache starts afresh (a bound on memory, not a working-set size).
const MAX_ENTRIES: usize = 100_000;

/// The node's caches.
#[derive(Default)]
pub(crate) struct Caches {
    patients: Mutex<HashMap<ConversationId, (OrgId, Option<PatientId>)>>,
}

impl Caches {
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
