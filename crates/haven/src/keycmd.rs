//! `haven keys`: master-key status and rotation.

use std::path::Path;

use clap::Subcommand;

use crate::config::Conf;

/// Master-key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the current master-key version and which versions organisation keys are under.
    Status,
    /// Add a new master-key version and re-wrap every organisation key and re-seal every TOTP
    /// secret under it. Running servers keep working: they pick up the new version when they
    /// meet it. Old versions stay in the key file (they still open anything not yet re-wrapped).
    Rotate {
        /// Do not add a version: re-wrap under the highest version already configured (after
        /// adding one to HAVEN_KEYS_MASTER_KEY yourself).
        #[arg(long)]
        rewrap_only: bool,
    },
}

/// Runs a keys command.
pub async fn run(conf: &Conf, data_dir: &Path, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Status => {
            let app = crate::serve::open_app(conf, data_dir).await?;
            let s = app.key_status().await?;
            println!("current master key version: {}", s.current);
            if s.org_keys_by_version.is_empty() {
                println!("no organisation keys yet (created at first use)");
            }
            for (v, n) in &s.org_keys_by_version {
                println!("  version {v}: {n} organisation key(s)");
            }
            app.store().close().await;
        }
        KeysCommand::Rotate { rewrap_only } => {
            if !rewrap_only {
                let v = crate::keys::add_master_version(conf, data_dir)?;
                println!("added master key version {v} to the key file; back it up now");
            }
            let app = crate::serve::open_app(conf, data_dir).await?;
            let bar = crate::audit::bar(0, "re-wrapping");
            let report = app
                .rewrap_all(&|done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .await?;
            bar.finish_and_clear();
            println!(
                "re-wrapped {} organisation key(s) and re-sealed {} authenticator secret(s) under master key version {}",
                report.org_keys, report.totp_secrets, report.version
            );
            println!(
                "older versions stay in the key file; remove one only after `haven keys status` shows nothing under it"
            );
            app.store().close().await;
        }
    }
    Ok(())
}
