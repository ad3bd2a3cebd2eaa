//! `haven`: the server and its command-line tool.

mod admin;
mod audit;
mod client;
mod cluster;
mod config;
mod keycmd;
mod keys;
mod sched;
mod serve;
mod syslog;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a send allocates and frees many small buffers across
/// threads (request, sealing, statements, one frame per socket), and glibc's arenas spent a
/// tenth of the server's time there (consolidating and unlinking free chunks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Haven: secure messaging for care teams.
#[derive(Debug, Parser)]
#[command(name = "haven", version, about)]
struct Cli {
    /// Directory for the embedded database, the master key and other local state.
    #[arg(long, global = true, env = "HAVEN_DATA_DIR", default_value = "./haven-data")]
    data_dir: PathBuf,
    /// Configuration file (TOML). `haven config example` prints a commented one.
    #[arg(long, global = true, env = "HAVEN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Create the demo organisation "Riverside Clinic" (once) and print its accounts.
        #[arg(long)]
        demo: bool,
        /// Listen here instead of server.bind, e.g. 127.0.0.1:9000.
        #[arg(long)]
        bind: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Administer organisations and users directly on the database.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// The tamper-evident audit log: export, verify offline, checkpoint.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Use the messaging API of a running server from the command line (for scripts).
    Client(client::ClientArgs),
    /// Master keys: status and rotation.
    #[command(subcommand)]
    Keys(keycmd::KeysCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented example configuration, generated from the code.
    Example,
    /// Validate the configuration (file and environment) and report problems.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version => {
            println!("haven {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Audit(audit::AuditCommand::Verify { file, checkpoint, key }) => {
            if audit::verify(&file, checkpoint.as_deref(), key.as_deref())? {
                Ok(())
            } else {
                anyhow::bail!("the audit log did not verify")
            }
        }
        Command::Client(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(client::run(args))
        }
        Command::Config(ConfigCommand::Example) => {
            print!("{}", config::example());
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            let conf = config::load(cli.config.as_deref())?;
            conf.listen(None)?;
            conf.app_settings()?;
            conf.database_url(&cli.data_dir)?;
            println!("configuration OK");
            Ok(())
        }
        command => {
            let conf = config::load(cli.config.as_deref())?;
            serve::init_logging(&conf)?;
            let rt = sched::runtime(conf.server.batch_scheduling)?;
            rt.block_on(async move {
                match command {
                    Command::Serve { demo, bind } => {
                        serve::serve(&conf, &cli.data_dir, demo, bind.as_deref()).await
                    }
                    Command::Migrate => serve::migrate(&conf, &cli.data_dir).await,
                    Command::Admin(cmd) => admin::run(&conf, &cli.data_dir, cmd).await,
                    Command::Audit(cmd) => audit::run(&conf, &cli.data_dir, cmd).await,
                    Command::Keys(cmd) => keycmd::run(&conf, &cli.data_dir, cmd).await,
                    _ => unreachable!("handled above"),
                }
            })
        }
    }
}
