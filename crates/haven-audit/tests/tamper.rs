//! Any single change to an exported log is caught by the verifier; the untouched log passes.

use haven_audit::checkpoint::{Checkpoint, NoteSigner};
use haven_audit::export::{self, VerifyError};
use haven_audit::merkle::{Frontier, leaf_hash};
use proptest::prelude::*;

const ORIGIN: &str = "haven.test/audit";

/// An export of `n` entries (entries `full_from..` in full, earlier ones as hashes), with a
/// checkpoint every 5 entries and one at the end. Returns its lines and an early checkpoint.
fn build(n: u64, full_from: u64) -> (Vec<String>, String) {
    build_signed(n, full_from, [5; 32])
}

fn build_signed(n: u64, full_from: u64, seed: [u8; 32]) -> (Vec<String>, String) {
    let signer = NoteSigner::new(ORIGIN, &seed).unwrap();
    let mut lines = vec![export::header(ORIGIN, &signer.verifier_key())];
    let mut f = Frontier::new();
    let mut notes = Vec::new();
    for seq in 1..=n {
        let json =
            format!(r#"{{"seq":{seq},"time":{},"event":"login","user":"u{}"}}"#, 1_000 + seq * 10, seq % 3);
        let leaf = leaf_hash(json.as_bytes());
        f.push(leaf);
        lines.push(if seq >= full_from {
            export::entry_line(seq, &leaf, &json)
        } else {
            export::hash_line(seq, &leaf)
        });
        if seq.is_multiple_of(5) || seq == n {
            notes.push(signer.sign(&Checkpoint { origin: ORIGIN.into(), size: seq, root: f.root() }));
        }
    }
    let kept = notes[0].clone();
    lines.extend(notes.iter().map(|n| export::checkpoint_line(n)));
    (lines.iter().flat_map(|l| l.lines().map(str::to_owned).collect::<Vec<_>>()).collect(), kept)
}

fn run(lines: &[String], kept: Option<&str>) -> Result<export::Verified, VerifyError> {
    let text = lines.join("\n") + "\n";
    export::verify(text.as_bytes(), None, kept, &mut |_| {})
}

#[test]
fn untouched_logs_verify() {
    for n in [1, 2, 5, 6, 17, 64] {
        let (lines, kept) = build(n, 1);
        let v = run(&lines, Some(&kept)).unwrap();
        assert_eq!((v.size, v.full_entries), (n, n));
        let (lines, _) = build(n, n / 2 + 1);
        assert_eq!(run(&lines, None).unwrap().size, n);
    }
}

#[test]
fn a_log_re_signed_by_another_key_fails_against_the_trusted_key() {
    let trusted = NoteSigner::new(ORIGIN, &[5; 32]).unwrap().verifier_key();
    let (genuine, _) = build(12, 1);
    let text = genuine.join("\n") + "\n";
    let v = export::verify(text.as_bytes(), Some(&trusted), None, &mut |_| {}).unwrap();
    assert!(v.key_pinned);
    // A forger rewrites history and signs it all with a key of their own: self-consistent...
    let (forged, _) = build_signed(12, 1, [6; 32]);
    let text = forged.join("\n") + "\n";
    let v = export::verify(text.as_bytes(), None, None, &mut |_| {}).unwrap();
    assert!(!v.key_pinned, "and reported as checked only against its own key");
    // ...but refused by an auditor who pins the server's key.
    let e = export::verify(text.as_bytes(), Some(&trusted), None, &mut |_| {}).unwrap_err();
    assert!(e.reason.contains("trusted"), "{e:?}");
}

#[derive(Debug, Clone)]
enum Tamper {
    EditByte { line: usize, at: usize },
    Delete { line: usize },
    Insert { line: usize },
    Swap { a: usize, b: usize },
    Truncate { keep: usize },
    DropLastCheckpoint,
    RollBackCheckpoint,
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(line, at)| Tamper::EditByte { line, at }),
        any::<usize>().prop_map(|line| Tamper::Delete { line }),
        any::<usize>().prop_map(|line| Tamper::Insert { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Tamper::Swap { a, b }),
        any::<usize>().prop_map(|keep| Tamper::Truncate { keep }),
        Just(Tamper::DropLastCheckpoint),
        Just(Tamper::RollBackCheckpoint),
    ]
}

fn apply(t: &Tamper, lines: &mut Vec<String>) -> bool {
    let entries: Vec<usize> =
        (0..lines.len()).filter(|&i| lines[i].starts_with("e ") || lines[i].starts_with("h ")).collect();
    let checkpoints: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("c ")).collect();
    match *t {
        Tamper::EditByte { line, at } => {
            let i = 3 + line % (lines.len() - 3);
            let bytes = lines[i].as_bytes();
            let at = at % bytes.len();
            let old = bytes[at];
            let new = if old == b'7' { b'8' } else { b'7' };
            let mut v = bytes.to_vec();
            v[at] = new;
            lines[i] = String::from_utf8(v).unwrap();
        }
        Tamper::Delete { line } => {
            lines.remove(entries[line % entries.len()]);
        }
        Tamper::Insert { line } => {
            let i = entries[line % entries.len()];
            let copy = lines[i].clone();
            lines.insert(i, copy);
        }
        Tamper::Swap { a, b } => {
            let (a, b) = (entries[a % entries.len()], entries[b % entries.len()]);
            if lines[a] == lines[b] {
                return false;
            }
            lines.swap(a, b);
        }
        Tamper::Truncate { keep } => {
            let cut = keep % entries.len();
            let first_cp = checkpoints[0];
            lines.drain(entries[cut]..first_cp);
        }
        Tamper::DropLastCheckpoint => {
            lines.pop();
        }
        Tamper::RollBackCheckpoint => {
            if checkpoints.len() < 2 {
                lines.pop();
            } else {
                let earlier = lines[checkpoints[checkpoints.len() - 2]].clone();
                *lines.last_mut().unwrap() = earlier;
            }
        }
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn every_single_change_is_rejected(n in 1u64..40, full_from in 1u64..40, t in tamper()) {
        let (mut lines, _) = build(n, full_from.min(n));
        prop_assert!(run(&lines, None).is_ok());
        if apply(&t, &mut lines) {
            prop_assert!(run(&lines, None).is_err(), "{:?} was not detected", t);
        }
    }
}

#[test]
fn a_kept_checkpoint_catches_a_rewritten_history() {
    let (lines, kept) = build(12, 1);
    // A whole new log of the same length, signed by the same key: internally consistent, but
    // not an extension of what the auditor saw before.
    let signer = NoteSigner::new(ORIGIN, &[5; 32]).unwrap();
    let mut forged: Vec<String> =
        export::header(ORIGIN, &signer.verifier_key()).lines().map(str::to_owned).collect();
    let mut f = Frontier::new();
    for seq in 1..=12u64 {
        let json = format!(r#"{{"seq":{seq},"time":{},"event":"rewritten"}}"#, 1_000 + seq);
        let leaf = leaf_hash(json.as_bytes());
        f.push(leaf);
        forged.push(export::entry_line(seq, &leaf, &json).trim_end().to_owned());
    }
    let note = signer.sign(&Checkpoint { origin: ORIGIN.into(), size: 12, root: f.root() });
    forged.push(export::checkpoint_line(&note).trim_end().to_owned());
    assert!(run(&forged, None).is_ok(), "on its own the forgery is consistent");
    let e = run(&forged, Some(&kept)).unwrap_err();
    assert!(e.reason.contains("not consistent with the kept checkpoint"), "{e}");
    assert!(run(&lines, Some(&kept)).is_ok());
}

#[test]
fn errors_name_the_first_bad_entry() {
    let (mut lines, _) = build(10, 1);
    lines[3 + 6] = lines[3 + 6].replace("login", "logout");
    let e = run(&lines, None).unwrap_err();
    assert_eq!(e.seq, Some(7));
    assert!(e.reason.contains("altered"), "{e}");
    // A forger who also rewrites the recorded hash is caught by the signed root, and told
    // which checkpoint interval holds the change.
    let (mut lines, _) = build(10, 1);
    let json = lines[3 + 6].splitn(4, ' ').nth(3).unwrap().replace("login", "logout");
    lines[3 + 6] = export::entry_line(7, &leaf_hash(json.as_bytes()), &json).trim_end().to_owned();
    let e = run(&lines, None).unwrap_err();
    assert!(e.reason.contains("between 6 and 10"), "{e}");
    let (mut lines, _) = build(10, 1);
    lines.remove(3 + 4);
    let e = run(&lines, None).unwrap_err();
    assert_eq!(e.seq, Some(5));
    assert!(e.to_string().starts_with("entry 5, line 8: sequence gap"), "{e}");
}

#[test]
fn the_synthetic_benchmark_export_verifies_and_a_changed_byte_is_caught() {
    let mut out = Vec::new();
    let mut seen = 0;
    let notes = haven_audit::synthetic::write(250_001, &mut out, &mut |n| seen = n).unwrap();
    assert_eq!((notes, seen), (3, 250_001), "a checkpoint every 100,000 entries and at the end");
    let v = export::verify(&out[..], None, None, &mut |_| {}).unwrap();
    assert_eq!((v.size, v.full_entries), (250_001, 250_001));
    // A change deep inside a later batch of the parallel check is named exactly.
    let text = String::from_utf8(out.clone()).unwrap();
    let at = text.find("\ne 150000 ").unwrap() + 80;
    out[at] ^= 1;
    let e = export::verify(&out[..], None, None, &mut |_| {}).unwrap_err();
    assert_eq!((e.seq, e.line), (Some(150_000), 150_000 + 3), "{e:?}");
}
