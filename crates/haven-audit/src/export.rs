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

mod entries;
#[cfg(test)]
mod tests;

use std::io::{BufRead, Read};

use data_encoding::{BASE64, HEXLOWER};

use crate::checkpoint::{Checkpoint, NoteVerifier};
use crate::merkle::Hash;

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

/// The input after the entry reader, which may have stopped at a read error: then that error
/// comes first (and the checkpoint reader stops at it).
struct Rest<R> {
    error: Option<std::io::Error>,
    input: R,
}

impl<R: Read> Read for Rest<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.error.take() {
            Some(e) => Err(e),
            None => self.input.read(buf),
        }
    }
}

impl<R: BufRead> BufRead for Rest<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self.error.take() {
            Some(e) => Err(e),
            None => self.input.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        self.input.consume(amount);
    }
}

/// Verifies an export read from `input`. `trusted_key` is the verifier key the auditor got
/// from the server out of band: a file signed by any other key is refused (without it, the
/// key in the file is used, and a forger who re-signs everything with a key of their own would
/// pass). `kept` is a checkpoint note the auditor saved earlier (it must be signed by the same
/// key and be consistent with this log). `progress` is called with the number of bytes of the
/// file read so far, every 16 MB or so.
pub fn verify(
    input: impl BufRead,
    trusted_key: Option<&str>,
    kept: Option<&str>,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified, VerifyError> {
    verify_in_batches(input, trusted_key, kept, progress, entries::BATCH_BYTES)
}

/// [`verify`], reading the entries `batch_bytes` at a time (small in tests, so that lines fall
/// across buffer boundaries).
fn verify_in_batches(
    mut input: impl BufRead,
    trusted_key: Option<&str>,
    kept: Option<&str>,
    progress: &mut dyn FnMut(u64),
    batch_bytes: usize,
) -> Result<Verified, VerifyError> {
    let mut header = String::new();
    let mut number = 0;
    let mut header_bytes = 0u64;
    let mut next = |what: &str| -> Result<(usize, String), VerifyError> {
        number += 1;
        header.clear();
        match input.by_ref().read_line(&mut header) {
            Ok(0) => Err(err(0, None, format!("the file ends before the {what}"))),
            Ok(got) => {
                header_bytes += got as u64;
                // As `BufRead::lines`: a carriage return is part of the line end only before a
                // newline.
                let line = match header.strip_suffix('\n') {
                    Some(line) => line.strip_suffix('\r').unwrap_or(line),
                    None => &header,
                };
                Ok((number, line.to_owned()))
            }
            Err(e) => Err(err(number, None, format!("unreadable: {e}"))),
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

    let (entries, (read, error)) = entries::read(&mut input, number, header_bytes, batch_bytes, progress)?;
    // The checkpoints: the bytes the entry reader already read, then the rest of the file (or
    // the read error that ended it, reported at the line it interrupted).
    let mut checkpoints: Vec<(usize, Checkpoint)> = Vec::new();
    let rest = std::io::Cursor::new(read).chain(Rest { error, input }).lines();
    for (n, line) in rest.enumerate().map(|(i, l)| (entries.line + 1 + i, l)) {
        let line = line.map_err(|e| err(n, None, format!("unreadable: {e}")))?;
        let (kind, rest) = line.split_once(' ').ok_or_else(|| err(n, None, "malformed line"))?;
        if kind != "c" {
            return Err(err(n, None, "unexpected line (entries must come before checkpoints)"));
        }
        let note = BASE64
            .decode(rest.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| err(n, None, "malformed checkpoint line"))?;
        let cp = verifier.verify(&note).map_err(|e| err(n, None, format!("checkpoint: {e}")))?;
        checkpoints.push((n, cp));
    }
    let entries::Entries { leaves, full, .. } = entries;
    let size = leaves.len() as u64;
    let kept = match kept {
        Some(note) => {
            Some(verifier.verify(note).map_err(|e| err(0, None, format!("the kept checkpoint: {e}")))?)
        }
        None => None,
    };
    // The tree head at every size a checkpoint names, and over all the entries.
    let mut needed: Vec<u64> =
        checkpoints.iter().map(|(_, c)| c.size).chain(kept.iter().map(|k| k.size)).collect();
    needed.sort_unstable();
    needed.dedup();
    let (roots, root) = leaves.heads(&needed);
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
