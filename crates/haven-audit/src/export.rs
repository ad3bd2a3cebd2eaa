//! The audit export file and its offline verifier.
//!
//! The file is UTF-8 text, one record per line:
//!
//! ```text
//! haven-audit-export 1
//! origin <log origin>
//! key <verifier key: name+keyid+base64(0x01||ed25519 public key)>
//! e <seq> <hex leaf hash> <JSON>      an entry in full (inside the exported time range), with
//!                                     the leaf hash the server recorded when it was logged
//! h <seq> <hex leaf hash>             an entry outside the range: its leaf hash only
//! c <base64 of a signed checkpoint note>
//! ```
//!
//! Entries come first, in sequence order from 1, then checkpoints; the last checkpoint covers
//! exactly the entries in the file (the server signs one at export time). The verifier needs
//! nothing else: it recomputes every leaf and the tree heads, checks each checkpoint's
//! signature and root, sequence numbers without gaps, time never going backwards, and
//! optionally consistency with a checkpoint the auditor kept from earlier.

use std::collections::BTreeMap;
use std::io::BufRead;

use data_encoding::{BASE64, HEXLOWER};

use crate::checkpoint::{Checkpoint, NoteVerifier};
use crate::merkle::{Frontier, Hash, leaf_hash};

/// The first line of every export.
pub const MAGIC: &str = "haven-audit-export 1";

/// The header lines of an export.
pub fn header(origin: &str, verifier_key: &str) -> String {
    format!("{MAGIC}\norigin {origin}\nkey {verifier_key}\n")
}

/// A full entry line: the canonical entry bytes (`json`, without newlines) and the leaf hash
/// recorded when it was logged, so that an altered entry is named, not just detected.
pub fn entry_line(seq: u64, recorded_leaf: &Hash, json: &str) -> String {
    format!("e {seq} {} {json}\n", HEXLOWER.encode(recorded_leaf))
}

/// A hash-only entry line.
pub fn hash_line(seq: u64, leaf: &Hash) -> String {
    format!("h {seq} {}\n", HEXLOWER.encode(leaf))
}

/// A checkpoint line.
pub fn checkpoint_line(note: &str) -> String {
    format!("c {}\n", BASE64.encode(note.as_bytes()))
}

/// The first problem found, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}line {line}: {reason}", seq.map(|s| format!("entry {s}, ")).unwrap_or_default())]
pub struct VerifyError {
    /// 1-based line number in the file.
    pub line: usize,
    /// The entry's sequence number, when the problem is with an entry.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries in the log.
    pub size: u64,
    /// Root over all of them.
    pub root: Hash,
    /// Entries present in full.
    pub full_entries: u64,
    /// Signed checkpoints verified.
    pub checkpoints: usize,
    /// The verifier key the checkpoints were checked with.
    pub key: String,
    /// Whether that key was the one the caller trusts (`false`: taken from the file itself,
    /// which proves only that the file is self-consistent).
    pub key_pinned: bool,
}

#[derive(serde::Deserialize)]
struct EntryHead {
    seq: u64,
    time: i64,
}

fn err(line: usize, seq: Option<u64>, reason: impl Into<String>) -> VerifyError {
    VerifyError { line, seq, reason: reason.into() }
}

/// Entry lines checked together: each batch is split across the cores (hashing and parsing
/// are independent per entry) while the next batch is read, then its results are taken in
/// order.
const BATCH: usize = 32_768;

/// What one entry line yields: its leaf and, for a full entry, its time.
type Checked = (Hash, Option<i64>);

/// A part of a batch, checked: the results (with their line numbers) up to its first error, and
/// that error.
type Part = (Vec<(usize, Checked)>, Option<VerifyError>);

/// Checks one entry line (`e` or `h`) that should be number `seq`.
fn check_entry(n: usize, seq: u64, line: &str) -> Result<Checked, VerifyError> {
    let (kind, rest) = line.split_once(' ').ok_or_else(|| err(n, None, "malformed line"))?;
    let (found, payload) = rest.split_once(' ').ok_or_else(|| err(n, None, "malformed entry line"))?;
    let found: u64 = found.parse().map_err(|_| err(n, None, "malformed sequence number"))?;
    if found != seq {
        return Err(err(n, Some(seq), format!("sequence gap or reordering: found {found}, expected {seq}")));
    }
    if kind == "h" {
        let leaf = HEXLOWER
            .decode(payload.as_bytes())
            .ok()
            .and_then(|v| Hash::try_from(v).ok())
            .ok_or_else(|| err(n, Some(seq), "malformed leaf hash"))?;
        return Ok((leaf, None));
    }
    let (recorded, payload) =
        payload.split_once(' ').ok_or_else(|| err(n, Some(seq), "malformed entry line"))?;
    let head: EntryHead = serde_json::from_str(payload)
        .map_err(|_| err(n, Some(seq), "the entry is not valid canonical JSON"))?;
    if head.seq != seq {
        return Err(err(n, Some(seq), format!("the entry says it is number {}", head.seq)));
    }
    let leaf = leaf_hash(payload.as_bytes());
    let mut hex = [0u8; 64];
    HEXLOWER.encode_mut(&leaf, &mut hex);
    if hex[..] != *recorded.as_bytes() {
        return Err(err(
            n,
            Some(seq),
            "the entry does not match the hash recorded when it was logged: it was altered",
        ));
    }
    Ok((leaf, Some(head.time)))
}

fn check_part(first_seq: u64, part: Vec<(usize, String)>) -> Part {
    let mut ok = Vec::with_capacity(part.len());
    for (i, (n, line)) in part.iter().enumerate() {
        match check_entry(*n, first_seq + i as u64, line) {
            Ok(c) => ok.push((*n, c)),
            Err(e) => return (ok, Some(e)),
        }
    }
    (ok, None)
}

/// The entries checked so far, and the batch being checked while the next one is read.
struct Entries {
    leaves: Vec<Hash>,
    last_time: i64,
    full: u64,
    dispatched: u64,
    in_flight: Vec<std::thread::JoinHandle<Part>>,
}

impl Entries {
    fn new() -> Self {
        Self { leaves: Vec::new(), last_time: i64::MIN, full: 0, dispatched: 0, in_flight: Vec::new() }
    }

    /// Starts checking `batch` on one thread per core, then takes the results of the batch
    /// before it. Results are taken in line order, so the error reported is always the first
    /// bad line's.
    fn dispatch(
        &mut self,
        batch: Vec<(usize, String)>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), VerifyError> {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
        let per = batch.len().div_ceil(workers).max(1);
        let mut rest = batch;
        let mut handles = Vec::with_capacity(workers);
        while !rest.is_empty() {
            let tail = rest.split_off(per.min(rest.len()));
            let part = std::mem::replace(&mut rest, tail);
            let first_seq = self.dispatched + 1;
            self.dispatched += part.len() as u64;
            handles.push(std::thread::spawn(move || check_part(first_seq, part)));
        }
        let previous = std::mem::replace(&mut self.in_flight, handles);
        self.take(previous, progress)
    }

    /// Takes the results of the batch in flight.
    fn finish(&mut self, progress: &mut dyn FnMut(u64)) -> Result<(), VerifyError> {
        let last = std::mem::take(&mut self.in_flight);
        self.take(last, progress)
    }

    fn take(
        &mut self,
        handles: Vec<std::thread::JoinHandle<Part>>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), VerifyError> {
        if handles.is_empty() {
            return Ok(());
        }
        for h in handles {
            let (ok, failed) = h.join().expect("a verifier thread panicked");
            for (n, (leaf, time)) in ok {
                if let Some(time) = time {
                    if time < self.last_time {
                        return Err(err(n, Some(self.leaves.len() as u64 + 1), "time goes backwards"));
                    }
                    self.last_time = time;
                    self.full += 1;
                }
                self.leaves.push(leaf);
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        progress(self.leaves.len() as u64);
        Ok(())
    }
}

/// Verifies an export read from `input`. `trusted_key` is the verifier key the auditor got
/// from the server out of band: a file signed by any other key is refused (without it, the
/// key in the file is used, and a forger who re-signs everything with a key of their own would
/// pass). `kept` is a checkpoint note the auditor saved earlier (it must be signed by the same
/// key and be consistent with this log). `progress` is called with the number of entries read
/// so far, every 32,768 entries.
pub fn verify(
    input: impl BufRead,
    trusted_key: Option<&str>,
    kept: Option<&str>,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified, VerifyError> {
    let mut lines = input.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut next = |what: &str| -> Result<(usize, String), VerifyError> {
        match lines.next() {
            Some((n, Ok(l))) => Ok((n, l)),
            Some((n, Err(e))) => Err(err(n, None, format!("unreadable: {e}"))),
            None => Err(err(0, None, format!("the file ends before the {what}"))),
        }
    };
    let (n, magic) = next("header")?;
    if magic != MAGIC {
        return Err(err(n, None, "not a Haven audit export (bad first line)"));
    }
    let (n, origin) = next("origin")?;
    let origin =
        origin.strip_prefix("origin ").ok_or_else(|| err(n, None, "expected the origin line"))?.to_owned();
    let (n, key) = next("key")?;
    let key = key.strip_prefix("key ").ok_or_else(|| err(n, None, "expected the key line"))?;
    if let Some(trusted) = trusted_key
        && trusted.trim() != key.trim()
    {
        return Err(err(n, None, "the file is signed by a key other than the trusted one"));
    }
    let verifier = NoteVerifier::from_key(key).map_err(|e| err(n, None, e.to_string()))?;
    let key_text = key.trim().to_owned();
    if verifier.name() != origin {
        return Err(err(n, None, "the key's name is not the log origin"));
    }

    let mut checkpoints: Vec<(usize, Checkpoint)> = Vec::new();
    let mut entries = Entries::new();
    let mut batch: Vec<(usize, String)> = Vec::with_capacity(BATCH);
    let mut in_checkpoints = false;
    for (n, line) in lines {
        let line = line.map_err(|e| err(n, None, format!("unreadable: {e}")))?;
        let (kind, rest) = line.split_once(' ').ok_or_else(|| err(n, None, "malformed line"))?;
        match kind {
            "e" | "h" if !in_checkpoints => {
                batch.push((n, line));
                if batch.len() == BATCH {
                    entries.dispatch(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)), progress)?;
                }
            }
            "c" => {
                if !in_checkpoints {
                    entries.dispatch(std::mem::take(&mut batch), progress)?;
                    entries.finish(progress)?;
                    in_checkpoints = true;
                }
                let note = BASE64
                    .decode(rest.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| err(n, None, "malformed checkpoint line"))?;
                let cp = verifier.verify(&note).map_err(|e| err(n, None, format!("checkpoint: {e}")))?;
                checkpoints.push((n, cp));
            }
            _ => return Err(err(n, None, "unexpected line (entries must come before checkpoints)")),
        }
    }
    entries.dispatch(batch, progress)?;
    entries.finish(progress)?;
    let Entries { leaves, full, .. } = entries;
    let size = leaves.len() as u64;
    progress(size);
    let kept = match kept {
        Some(note) => {
            Some(verifier.verify(note).map_err(|e| err(0, None, format!("the kept checkpoint: {e}")))?)
        }
        None => None,
    };
    // One pass over the leaves yields the tree head at every size a checkpoint names.
    let mut needed: Vec<u64> =
        checkpoints.iter().map(|(_, c)| c.size).chain(kept.iter().map(|k| k.size)).collect();
    needed.sort_unstable();
    needed.dedup();
    let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut frontier = Frontier::new();
    let mut wanted = needed.iter().peekable();
    while wanted.next_if_eq(&&0).is_some() {
        roots.insert(0, frontier.root());
    }
    for leaf in &leaves {
        frontier.push(*leaf);
        while wanted.next_if_eq(&&frontier.size()).is_some() {
            roots.insert(frontier.size(), frontier.root());
        }
    }
    let root = frontier.root();
    let Some((last_line, last)) = checkpoints.last() else {
        return Err(err(0, None, "the export has no signed checkpoint"));
    };
    let mut previous = 0u64;
    for (n, cp) in &checkpoints {
        if cp.size < previous {
            return Err(err(*n, None, "checkpoints go backwards"));
        }
        match roots.get(&cp.size) {
            Some(r) if *r == cp.root => previous = cp.size,
            Some(_) => {
                let reason = format!(
                    "the entries do not produce the signed root of size {}: an entry between {} and {} \
                     was altered, removed or inserted",
                    cp.size,
                    previous + 1,
                    cp.size
                );
                return Err(err(*n, None, reason));
            }
            None => {
                let reason = format!("a checkpoint covers {} entries; the file has {size}", cp.size);
                return Err(err(*n, None, reason));
            }
        }
    }
    if last.size != size {
        return Err(err(
            *last_line,
            None,
            format!(
                "the last checkpoint covers {} entries but the file has {size}: truncated or rolled back",
                last.size
            ),
        ));
    }
    if let Some(k) = kept {
        if k.size > size {
            return Err(err(
                0,
                None,
                format!("the log is shorter ({size}) than the kept checkpoint ({})", k.size),
            ));
        }
        if roots.get(&k.size) != Some(&k.root) {
            return Err(err(
                0,
                None,
                format!("the log is not consistent with the kept checkpoint of size {}", k.size),
            ));
        }
    }
    Ok(Verified {
        size,
        root,
        full_entries: full,
        checkpoints: checkpoints.len(),
        key: key_text,
        key_pinned: trusted_key.is_some(),
    })
}
