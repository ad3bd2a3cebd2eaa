//! The verifier's answer does not depend on where its buffers end: every change to an export
//! gets the same verdict, with the same line and reason, read in buffers of any size.

use proptest::prelude::*;

use super::{BufRead, Verified, VerifyError, verify_in_batches};

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

#[derive(Debug, Clone)]
enum Change {
    None,
    FlipByte { line: usize, at: usize, bit: u8 },
    Delete { line: usize },
    Duplicate { line: usize },
    Swap { a: usize, b: usize },
    CrLf,
    NoFinalNewline,
    EntryAfterCheckpoints { line: usize },
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
        // Any byte: a newline flipped joins two lines, a high bit breaks UTF-8.
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
        Change::NoFinalNewline => {
            let mut text = lines.join(&b'\n');
            text.extend_from_slice(b"\n");
            text.pop();
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
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_verdict_does_not_depend_on_the_buffer_size(
        n in 1u64..40,
        change in change(),
        batch in 1usize..3_000,
    ) {
        let text = apply(export(n), &change);
        let whole = run(&text, 1 << 20);
        prop_assert_eq!(run(&text, batch), whole.clone(), "{:?} in buffers of {}", change, batch);
        if matches!(change, Change::None | Change::CrLf | Change::NoFinalNewline) {
            prop_assert_eq!(whole.map(|v| v.size), Ok(n));
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
