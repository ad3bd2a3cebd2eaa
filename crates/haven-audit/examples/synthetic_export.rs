//! Writes a synthetic, validly signed audit export of N entries, to measure the offline
//! verifier: `cargo run --release -p haven-audit --example synthetic_export -- 1000000 FILE`,
//! then `time haven audit verify FILE`.

use std::io::Write;

use haven_audit::checkpoint::{Checkpoint, NoteSigner};
use haven_audit::export;
use haven_audit::merkle::{Frontier, leaf_hash};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let path = args.next().unwrap_or_else(|| "synthetic-audit-export.txt".into());
    let origin = "haven.bench/audit";
    let signer = NoteSigner::new(origin, &[42; 32]).expect("valid origin");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    out.write_all(export::header(origin, &signer.verifier_key()).as_bytes())?;
    let mut f = Frontier::new();
    let mut notes = Vec::new();
    for seq in 1..=n {
        // Shaped like a real sign-in record (about 400 bytes).
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
        }
    }
    for note in &notes {
        out.write_all(export::checkpoint_line(note).as_bytes())?;
    }
    out.flush()?;
    println!("wrote {n} entries and {} checkpoints to {path}", notes.len());
    Ok(())
}
