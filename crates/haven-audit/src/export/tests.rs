//! The verifier's answer does not depend on where its buffers end: every change to an export
//! gets the verdict a reading of one line at a time gives, with the same line and reason, read
//! in buffers of any size.

use std::io::{BufReader, Read};

use data_encoding::{BASE64, HEXLOWER};
use proptest::prelude::*;

use super::{BufRead, EntryHead, Verified, VerifyError, verify_in_batches};
use crate::checkpoint::NoteVerifier;
use crate::merkle::{Hash, leaf_hash, root};

/// A synthetic export of `n` entries as lines, entries whose number is a multiple of 3 given
/// as hashes only.
fn export(n: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    crate::synthetic::write(n, &mut out, &mut |_| {}).unwrap();
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let text = std::str::from_utf8(l).unwrap();
            let mut f = text.splitn(4, ' ');
            match (f.next(), f.next(), f.next()) {
                (Some("e"), Some(seq), Some(leaf)) if seq.parse::<u64>().unwrap() % 3 == 0 => {
                    format!("h {seq} {leaf}").into_bytes()
                }
                _ => l.to_vec(),
            }
        })
        .collect()
}

fn run(text: &[u8], batch: usize) -> Result<Verified, VerifyError> {
    verify_in_batches(text, None, None, &mut |_| {}, batch)
}

/// The rules applied one line at a time, sharing nothing with the verifier's reading but the
/// entry's JSON head: the oracle the buffered, parallel reading is held to. (The tests change
/// only what follows the header.)
fn reference(text: &[u8]) -> Result<Verified, VerifyError> {
    let fail = |line: usize, seq: Option<u64>, reason: String| Err(VerifyError { line, seq, reason });
    let lines: Vec<(usize, std::io::Result<String>)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
    let key = lines[2].1.as_ref().unwrap().strip_prefix("key ").unwrap().trim().to_owned();
    let verifier = NoteVerifier::from_key(&key).unwrap();
    let mut leaves: Vec<Hash> = Vec::new();
    let (mut last_time, mut full) = (i64::MIN, 0);
    let mut checkpoints = Vec::new();
    for (n, line) in lines.into_iter().skip(3) {
        let Ok(line) = line else {
            return fail(n, None, "unreadable: stream did not contain valid UTF-8".into());
        };
        let Some((kind, rest)) = line.split_once(' ') else { return fail(n, None, "malformed line".into()) };
        let unexpected = "unexpected line (entries must come before checkpoints)";
        if kind == "c" || !checkpoints.is_empty() {
            if kind != "c" {
                return fail(n, None, unexpected.into());
            }
            let Some(note) = BASE64.decode(rest.as_bytes()).ok().and_then(|b| String::from_utf8(b).ok())
            else {
                return fail(n, None, "malformed checkpoint line".into());
            };
            match verifier.verify(&note) {
                Ok(cp) => checkpoints.push((n, cp)),
                Err(e) => return fail(n, None, format!("checkpoint: {e}")),
            }
            continue;
        }
        if kind != "e" && kind != "h" {
            return fail(n, None, unexpected.into());
        }
        let seq = leaves.len() as u64 + 1;
        let Some((found, payload)) = rest.split_once(' ') else {
            return fail(n, None, "malformed entry line".into());
        };
        let Ok(found) = found.parse::<u64>() else {
            return fail(n, None, "malformed sequence number".into());
        };
        if found != seq {
            return fail(n, Some(seq), format!("sequence gap or reordering: found {found}, expected {seq}"));
        }
        if kind == "h" {
            match HEXLOWER.decode(payload.as_bytes()).ok().and_then(|v| Hash::try_from(v).ok()) {
                Some(leaf) => leaves.push(leaf),
                None => return fail(n, Some(seq), "malformed leaf hash".into()),
            }
            continue;
        }
        let Some((recorded, json)) = payload.split_once(' ') else {
            return fail(n, Some(seq), "malformed entry line".into());
        };
        let Ok(head) = serde_json::from_str::<EntryHead>(json) else {
            return fail(n, Some(seq), "the entry is not valid canonical JSON".into());
        };
        if head.seq != seq {
            return fail(n, Some(seq), format!("the entry says it is number {}", head.seq));
        }
        let leaf = leaf_hash(json.as_bytes());
        if HEXLOWER.encode(&leaf) != recorded {
            let altered = "the entry does not match the hash recorded when it was logged: it was altered";
            return fail(n, Some(seq), altered.into());
        }
        if head.time < last_time {
            return fail(n, Some(seq), "time goes backwards".into());
        }
        (last_time, full) = (head.time, full + 1);
        leaves.push(leaf);
    }
    let size = leaves.len() as u64;
    let Some((last_line, last)) = checkpoints.last() else {
        return fail(0, None, "the export has no signed checkpoint".into());
    };
    let mut previous = 0;
    for (n, cp) in &checkpoints {
        if cp.size < previous {
            return fail(*n, None, "checkpoints go backwards".into());
        }
        if cp.size > size {
            return fail(*n, None, format!("a checkpoint covers {} entries; the file has {size}", cp.size));
        }
        if root(&leaves[..cp.size as usize]) != cp.root {
            let reason = format!(
                "the entries do not produce the signed root of size {}: an entry between {} and {} \
                 was altered, removed or inserted",
                cp.size,
                previous + 1,
                cp.size
            );
            return fail(*n, None, reason);
        }
        previous = cp.size;
    }
    if last.size != size {
        let reason = format!(
            "the last checkpoint covers {} entries but the file has {size}: truncated or rolled back",
            last.size
        );
        return fail(*last_line, None, reason);
    }
    Ok(Verified {
        size,
        root: root(&leaves),
        full_entries: full,
        checkpoints: checkpoints.len(),
        key,
        key_pinned: false,
    })
}

#[derive(Debug, Clone)]
enum Change {
    None,
    FlipByte {
        line: usize,
        at: usize,
        bit: u8,
    },
    Delete {
        line: usize,
    },
    /// The file cut after a line, with a carriage return and no newline: part of that line.
    CutWithReturn {
        line: usize,
    },
    Duplicate {
        line: usize,
    },
    Swap {
        a: usize,
        b: usize,
    },
    CrLf,
    NoFinalNewline,
    EntryAfterCheckpoints {
        line: usize,
    },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::None),
        (any::<usize>(), any::<usize>(), 0u8..8).prop_map(|(line, at, bit)| Change::FlipByte {
            line,
            at,
            bit
        }),
        any::<usize>().prop_map(|line| Change::Delete { line }),
        any::<usize>().prop_map(|line| Change::Duplicate { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Change::Swap { a, b }),
        Just(Change::CrLf),
        Just(Change::NoFinalNewline),
        any::<usize>().prop_map(|line| Change::CutWithReturn { line }),
        any::<usize>().prop_map(|line| Change::EntryAfterCheckpoints { line }),
    ]
}

/// The export's text after `change`.
fn apply(mut lines: Vec<Vec<u8>>, change: &Change) -> Vec<u8> {
    let body = 3..lines.len();
    let pick = |i: usize| body.start + i % body.len();
    let mut end = "\n";
    match *change {
        Change::None => {}
        // Any bit of any byte: one can become a newline and split the line, a high bit breaks
        // UTF-8, most break the JSON or the hash.
        Change::FlipByte { line, at, bit } => {
            let l = &mut lines[pick(line)];
            let at = at % l.len();
            l[at] ^= 1 << bit;
        }
        Change::Delete { line } => {
            lines.remove(pick(line));
        }
        Change::Duplicate { line } => {
            let i = pick(line);
            let copy = lines[i].clone();
            lines.insert(i, copy);
        }
        Change::Swap { a, b } => {
            let (a, b) = (pick(a), pick(b));
            lines.swap(a, b);
        }
        Change::CrLf => end = "\r\n",
        Change::NoFinalNewline => return lines.join(&b'\n'),
        Change::CutWithReturn { line } => {
            lines.truncate(pick(line) + 1);
            let mut text = lines.join(&b'\n');
            text.push(b'\r');
            return text;
        }
        Change::EntryAfterCheckpoints { line } => {
            let copy = lines[pick(line)].clone();
            lines.push(copy);
        }
    }
    let mut text = lines.join(end.as_bytes());
    text.extend_from_slice(end.as_bytes());
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_verdict_is_that_of_a_line_by_line_reading_in_buffers_of_any_size(
        n in 1u64..40,
        change in change(),
        batch in 1usize..3_000,
    ) {
        let text = apply(export(n), &change);
        let expected = reference(&text);
        prop_assert_eq!(run(&text, batch), expected.clone(), "{:?} in buffers of {}", change, batch);
        prop_assert_eq!(run(&text, 1 << 20), expected.clone(), "{:?} in one buffer", change);
        if matches!(change, Change::None | Change::CrLf | Change::NoFinalNewline) {
            prop_assert_eq!(expected.map(|v| v.size), Ok(n));
        }
    }
}

#[test]
fn errors_name_the_line_wherever_the_buffers_end() {
    let mut lines = export(30);
    // Entry 20 is on line 23; it is a full entry (20 is not a multiple of 3).
    let at = lines[22].windows(5).position(|w| w == b"login").unwrap();
    lines[22][at + 4] = b'm';
    let text = apply(lines, &Change::None);
    for batch in [1, 7, 499, 500, 501, 1_000, 4_096, 1 << 20] {
        let e = run(&text, batch).unwrap_err();
        assert_eq!((e.line, e.seq), (23, Some(20)), "buffers of {batch}: {e}");
        assert!(e.reason.contains("altered"), "{e}");
    }
}

#[test]
fn progress_counts_the_bytes_read() {
    let text = apply(export(100), &Change::None);
    let mut seen = Vec::new();
    verify_in_batches(&text[..], None, None, &mut |b| seen.push(b), 4_096).unwrap();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&(text.len() as u64)));
    assert!(seen.len() >= 8, "called after every buffer: {seen:?}");
    // The header is read line by line first.
    let mut header = Vec::new();
    (&text[..]).read_until(b'\n', &mut header).unwrap();
    assert!(seen[0] > header.len() as u64);
}

#[test]
fn a_line_with_several_faults_is_reported_by_its_first() {
    // Checked in the order a reader of one line at a time meets them: the line's sequence
    // number, then the entry's JSON, then the number inside it, then the recorded hash.
    let lines = export(10);
    let reasons = |edit: &dyn Fn(&str) -> String| {
        let mut lines = lines.clone();
        lines[3 + 6] = edit(std::str::from_utf8(&lines[3 + 6]).unwrap()).into_bytes();
        let text = apply(lines, &Change::None);
        [1, 300, 1 << 20].map(|b| run(&text, b).unwrap_err().to_string())
    };
    let wrong_number_and_json = reasons(&|l| l.replacen("e 7 ", "e 8 ", 1).replacen("}", "", 1));
    for r in wrong_number_and_json {
        assert_eq!(r, "entry 7, line 10: sequence gap or reordering: found 8, expected 7");
    }
    let wrong_inner_number_and_hash = reasons(&|l| l.replacen("\"seq\":7", "\"seq\":9", 1));
    for r in wrong_inner_number_and_hash {
        assert_eq!(r, "entry 7, line 10: the entry says it is number 9");
    }
    let bad_json = reasons(&|l| l.replacen("}", "", 1));
    for r in bad_json {
        assert_eq!(r, "entry 7, line 10: the entry is not valid canonical JSON");
    }
    let no_number = reasons(&|l| l.replacen("e 7 ", "e x7 ", 1));
    for r in no_number {
        assert_eq!(r, "line 10: malformed sequence number");
    }
}

/// Gives `text` up to `fail_at` bytes, then a read error; or, without `fail_at`, `text` and
/// then 64 MiB with no newline (a hostile file).
struct Source<'a> {
    text: &'a [u8],
    at: usize,
    fail_at: Option<usize>,
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let end = self.fail_at.unwrap_or(self.text.len() + (64 << 20));
        if self.at >= end {
            return match self.fail_at {
                Some(_) => Err(std::io::Error::other("the disk is on fire")),
                None => Ok(0),
            };
        }
        let n = buf.len().min(end - self.at);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.text.get(self.at + i).copied().unwrap_or(b'a');
        }
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_read_error_is_reported_at_the_line_it_interrupts_after_any_earlier_fault() {
    let text = apply(export(30), &Change::None);
    let header: usize = text.split(|&b| b == b'\n').take(3).map(|l| l.len() + 1).sum();
    for batch in [1, 700, 4_096, 1 << 20] {
        for fail_at in [header, header + 1, header + 5_000, text.len() - 10, text.len() - 600] {
            let line = text[..fail_at].iter().filter(|&&b| b == b'\n').count() + 1;
            let source = Source { text: &text, at: 0, fail_at: Some(fail_at) };
            let e = verify_in_batches(BufReader::new(source), None, None, &mut |_| {}, batch).unwrap_err();
            assert_eq!((e.line, e.reason.as_str()), (line, "unreadable: the disk is on fire"), "{batch}");
        }
        // A bad line before the failure is the one reported.
        let mut lines = export(30);
        lines[6] = b"x".to_vec();
        let bad = apply(lines, &Change::None);
        let source = Source { text: &bad, at: 0, fail_at: Some(bad.len() - 600) };
        let e = verify_in_batches(BufReader::new(source), None, None, &mut |_| {}, batch).unwrap_err();
        assert_eq!((e.line, e.reason.as_str()), (7, "malformed line"), "{batch}");
    }
}

#[test]
fn a_bad_line_before_an_endless_one_is_reported_without_reading_on() {
    let mut lines = export(10);
    lines.truncate(8);
    lines[7] = b"x".to_vec();
    let text = apply(lines, &Change::None);
    for batch in [1, 700, 4_096] {
        let mut source = Source { text: &text, at: 0, fail_at: None };
        let e = verify_in_batches(BufReader::new(&mut source), None, None, &mut |_| {}, batch).unwrap_err();
        assert_eq!((e.line, e.reason.as_str()), (8, "malformed line"));
        assert!(source.at < text.len() + 4 * batch + (64 << 10), "read {} bytes", source.at);
    }
}
