//! `haven audit …`: export the log for an auditor, verify an export offline, sign a checkpoint.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use haven_app::Actor;
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use tokio::io::AsyncWriteExt;

use crate::config::Conf;

/// Audit-log commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write the log with its signed checkpoints and public key to a file.
    Export {
        /// The file to write.
        #[arg(long)]
        output: PathBuf,
        /// Only entries recorded at or after this time in full (RFC 3339, or a date), the
        /// others as hashes; every entry is still covered by the verification.
        #[arg(long)]
        from: Option<String>,
        /// Only entries recorded at or before this time in full.
        #[arg(long)]
        to: Option<String>,
    },
    /// Verify an export offline, without the server or its database.
    Verify {
        /// The export file.
        file: PathBuf,
        /// A checkpoint note kept from earlier: the log must be consistent with it.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The log's verifier key as obtained from the server (printed by `haven audit export`,
        /// served at GET /api/v1/audit/checkpoint). Without it the key inside the file is used,
        /// which shows the file is self-consistent but not who signed it.
        #[arg(long)]
        key: Option<String>,
    },
    /// Sign a checkpoint of the log now and print it.
    Checkpoint,
}

fn parse_time(s: &str, end_of_day: bool) -> anyhow::Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let date: jiff::civil::Date =
        s.parse().with_context(|| format!("{s:?} is neither an RFC 3339 time nor a date"))?;
    let dt = if end_of_day { date.at(23, 59, 59, 999_999_999) } else { date.at(0, 0, 0, 0) };
    Ok(dt.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp())
}

pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} entries ({{eta}} left)"))
            .expect("valid template"),
    );
    bar
}

/// Runs the commands that need the database.
pub async fn run(conf: &Conf, data_dir: &Path, cmd: AuditCommand) -> anyhow::Result<()> {
    let app = crate::serve::open_app(conf, data_dir).await?;
    match cmd {
        AuditCommand::Export { output, from, to } => {
            let from = from.as_deref().map(|f| parse_time(f, false)).transpose().context("--from")?;
            let to = to.as_deref().map(|t| parse_time(t, true)).transpose().context("--to")?;
            let file = tokio::fs::File::create(&output)
                .await
                .with_context(|| format!("cannot create {}", output.display()))?;
            let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let progress = bar(0, "exporting");
            let summary = app
                .export_audit(&Actor::Operator, from, to, &mut out, &mut |done, total| {
                    progress.set_length(total);
                    progress.set_position(done);
                })
                .await?;
            progress.finish_and_clear();
            out.flush().await?;
            out.into_inner().sync_all().await?;
            println!(
                "exported {} entries ({} in full) and {} signed checkpoints to {}",
                summary.size,
                summary.full_entries,
                summary.checkpoints,
                output.display()
            );
            println!(
                "verify with: haven audit verify {} --key {}",
                output.display(),
                app.audit_verifier_key()
            );
        }
        AuditCommand::Checkpoint => {
            let cp = app.checkpoint().await?;
            print!("{}", cp.note);
        }
        AuditCommand::Verify { .. } => unreachable!("verify runs offline"),
    }
    app.store().close().await;
    Ok(())
}

/// `haven audit verify`: reads only the file (and the kept checkpoint). Returns whether it
/// verified; the report is printed.
pub fn verify(file: &Path, checkpoint: Option<&Path>, key: Option<&str>) -> anyhow::Result<bool> {
    let kept = checkpoint
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let len = f.metadata()?.len();
    let progress = ProgressBar::new(len);
    progress.set_style(
        ProgressStyle::with_template("verifying {bar:40} {bytes}/{total_bytes}").expect("valid template"),
    );
    // The file itself, not a counting wrapper: a file reads into the verifier's buffers without
    // their being zeroed first, and the verifier reports how far it has read.
    let reader = BufReader::with_capacity(1 << 20, f);
    let result =
        haven_audit::export::verify(reader, key, kept.as_deref(), &mut |read| progress.set_position(read));
    progress.finish_and_clear();
    match result {
        Ok(v) => {
            println!(
                "OK: {} entries ({} in full), root {}, {} signed checkpoints verified{}",
                v.size,
                v.full_entries,
                data_encoding::HEXLOWER.encode(&v.root),
                v.checkpoints,
                if kept.is_some() { ", consistent with the kept checkpoint" } else { "" }
            );
            if !v.key_pinned {
                println!(
                    "WARNING: the signatures were checked with the key inside the file ({}); \
                     pass --key with the key obtained from the server to prove who signed it",
                    v.key
                );
            }
            Ok(true)
        }
        Err(e) => {
            println!("FAILED: {e}");
            Ok(false)
        }
    }
}
