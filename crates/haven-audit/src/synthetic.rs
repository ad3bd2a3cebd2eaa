//! A synthetic, validly signed export of any size, to measure the offline verifier (the
//! benchmark tool's `audit` scenario) without first recording a million actions. Entries are
//! shaped like real sign-in records (about 400 bytes), signed by a fixed test key, with a
//! checkpoint every 100,000 entries and one at the end.

use std::io::Write;

use crate::checkpoint::{Checkpoint, NoteSigner};
use crate::export;
use crate::merkle::{Frontier, leaf_hash};

/// Writes `n` entries and their checkpoints to `out`; `progress` is called with the entries
/// written so far. Returns the number of checkpoints.
pub fn write(n: u64, out: &mut impl Write, progress: &mut dyn FnMut(u64)) -> std::io::Result<usize> {
    let origin = "haven.bench/audit";
    let signer = NoteSigner::new(origin, &[42; 32]).expect("a valid origin");
    out.write_all(export::header(origin, &signer.verifier_key()).as_bytes())?;
    let mut f = Frontier::new();
    let mut notes = Vec::new();
    for seq in 1..=n {
        let json = format!(
            concat!(
                r#"{{"seq":{},"time":{},"org_id":"39b786e8-1599-4687-af14-7f714dcd4a43","event_type":"user-authentication","#,
                r#""subtype":"login","action":"E","outcome":"Success","agent":{{"user_id":"10e45ed8-e5d2-4b79-8e03-{:012x}","#,
                r#""role":"clinician","address":"10.0.3.17","session_id":"ffc140f0-fdf4-487a-b655-754c3282785f","#,
                r#""user_agent":"Mozilla/5.0"}},"entities":[{{"kind":"user","id":"10e45ed8-e5d2-4b79-8e03-{:012x}"}}]}}"#
            ),
            seq,
            1_795_000_000_000u64 + seq,
            seq % 500,
            seq % 500
        );
        let leaf = leaf_hash(json.as_bytes());
        f.push(leaf);
        out.write_all(export::entry_line(seq, &leaf, &json).as_bytes())?;
        if seq % 100_000 == 0 || seq == n {
            notes.push(signer.sign(&Checkpoint { origin: origin.into(), size: seq, root: f.root() }));
            progress(seq);
        }
    }
    for note in &notes {
        out.write_all(export::checkpoint_line(note).as_bytes())?;
    }
    out.flush()?;
    Ok(notes.len())
}
