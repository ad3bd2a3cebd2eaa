//! `haven client`: the messaging API from the command line, for scripting. It talks to a
//! running server over HTTP(S) exactly as any client does; nothing here touches the database.
//! Output is JSON (one document per command) unless a command says otherwise, so it pipes into
//! `jq`.

use std::io::{BufRead, Read};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the server is and who is calling.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(long, env = "HAVEN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A session token from `haven client login` (or HAVEN_TOKEN).
    #[arg(long, env = "HAVEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of the certificate authority that signed the server's certificate (for
    /// servers with a private CA); the system's roots are trusted too.
    #[arg(long, env = "HAVEN_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: ClientCommand,
}

/// Client commands.
#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Sign in; reads the password from stdin, and prints the session token (export it as
    /// HAVEN_TOKEN).
    Login {
        /// Username.
        #[arg(long)]
        username: String,
        /// The current code of your authenticator, if you have one enrolled.
        #[arg(long)]
        code: Option<String>,
    },
    /// End the session.
    Logout,
    /// Your organisation's directory (to find member ids).
    Users,
    /// Your conversations, most recent first.
    Conversations {
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Start a conversation.
    Start {
        /// direct, group or patient.
        #[arg(long)]
        kind: String,
        /// A member's user id (repeat for several).
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        /// A title.
        #[arg(long)]
        title: Option<String>,
        /// The patient id of a patient conversation.
        #[arg(long)]
        patient: Option<String>,
    },
    /// Send a message; the body is the argument, or stdin when it is `-`.
    Send {
        /// Conversation id.
        conversation: String,
        /// The text, or `-` to read it from stdin.
        body: String,
        /// routine, urgent or stat.
        #[arg(long, default_value = "routine")]
        priority: String,
        /// Idempotency key (default: a random one); reuse it to retry safely.
        #[arg(long)]
        key: Option<String>,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
        /// Attachment ids from `upload` (repeat for several).
        #[arg(long = "attachment")]
        attachments: Vec<String>,
    },
    /// A page of history.
    History {
        /// Conversation id.
        conversation: String,
        /// Events before this sequence number (default: the newest).
        #[arg(long)]
        before: Option<i64>,
        /// Events after this sequence number.
        #[arg(long, conflicts_with = "before")]
        after: Option<i64>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Mark a conversation read up to a sequence number.
    Read {
        /// Conversation id.
        conversation: String,
        /// The sequence number read up to.
        seq: i64,
    },
    /// Upload a file to a conversation; prints the attachment (send it with `send --attachment`).
    Upload {
        /// Conversation id.
        conversation: String,
        /// The file.
        file: PathBuf,
    },
    /// Download an attachment to a file.
    Download {
        /// Attachment id.
        attachment: String,
        /// Where to write it.
        #[arg(long, short)]
        output: PathBuf,
    },
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn token(&self) -> anyhow::Result<()> {
        if self.token.is_none() {
            bail!("no session: run `haven client login` and export HAVEN_TOKEN");
        }
        Ok(())
    }
}

/// Reads a response: JSON on success, the problem's detail as the error otherwise.
async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let text = resp.text().await?;
    let body: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if status.is_success() {
        return Ok(body);
    }
    let code = body["code"].as_str().unwrap_or("error");
    let detail = body["detail"].as_str().unwrap_or("request failed");
    bail!("{status}: {detail} ({code})")
}

fn random_key() -> String {
    let mut b = [0u8; 16];
    haven_domain::Entropy::fill(&mut haven_app::OsEntropy, &mut b);
    data_encoding::HEXLOWER.encode(&b)
}

fn print(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs a client command.
pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let mut builder =
        reqwest::Client::builder().user_agent(concat!("haven-client/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("--ca-file: cannot read {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).context("--ca-file: not PEM certificates")? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let api =
        Api { http: builder.build()?, base: args.url.trim_end_matches('/').to_owned(), token: args.token };
    use reqwest::Method;
    let out = match args.command {
        ClientCommand::Login { username, code } => {
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password).context("reading the password from stdin")?;
            let body = json!({"username": username, "password": password.trim_end_matches(['\r', '\n'])});
            let r = answer(api.req(Method::POST, "/auth/login").json(&body).send().await?).await?;
            let token = r["token"].as_str().context("no token in the answer")?.to_owned();
            let token = match (r["state"].as_str(), code) {
                (Some("active"), _) => token,
                (Some("mfa_required"), Some(code)) => {
                    let api = Api { token: Some(token), ..api };
                    let r = answer(
                        api.req(Method::POST, "/auth/mfa/verify").json(&json!({"code": code})).send().await?,
                    )
                    .await?;
                    r["token"].as_str().context("no token in the answer")?.to_owned()
                }
                (Some("mfa_required"), None) => bail!("this account has an authenticator: pass --code"),
                (state, _) => {
                    bail!("sign-in needs an authenticator enrolled first (state {state:?}); use the web app")
                }
            };
            println!("{token}");
            return Ok(());
        }
        ClientCommand::Logout => {
            api.token()?;
            answer(api.req(Method::POST, "/auth/logout").json(&json!({})).send().await?).await?;
            return Ok(());
        }
        ClientCommand::Users => {
            api.token()?;
            answer(api.req(Method::GET, "/users?limit=200").send().await?).await?
        }
        ClientCommand::Conversations { limit } => {
            api.token()?;
            answer(api.req(Method::GET, &format!("/conversations?limit={limit}")).send().await?).await?
        }
        ClientCommand::Start { kind, members, title, patient } => {
            api.token()?;
            let body = json!({"kind": kind, "members": members, "title": title, "patient_id": patient});
            answer(api.req(Method::POST, "/conversations").json(&body).send().await?).await?
        }
        ClientCommand::Send { conversation, body, priority, key, expires_at, attachments } => {
            api.token()?;
            let body = if body == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                body
            };
            let req = json!({
                "idempotency_key": key.unwrap_or_else(random_key), "body": body, "priority": priority,
                "expires_at": expires_at, "attachments": attachments,
            });
            answer(
                api.req(Method::POST, &format!("/conversations/{conversation}/messages"))
                    .json(&req)
                    .send()
                    .await?,
            )
            .await?
        }
        ClientCommand::History { conversation, before, after, limit } => {
            api.token()?;
            let pos = match (before, after) {
                (_, Some(a)) => format!("&after={a}"),
                (Some(b), None) => format!("&before={b}"),
                (None, None) => String::new(),
            };
            answer(
                api.req(Method::GET, &format!("/conversations/{conversation}/events?limit={limit}{pos}"))
                    .send()
                    .await?,
            )
            .await?
        }
        ClientCommand::Read { conversation, seq } => {
            api.token()?;
            let body = json!({"read_seq": seq});
            answer(
                api.req(Method::POST, &format!("/conversations/{conversation}/receipts"))
                    .json(&body)
                    .send()
                    .await?,
            )
            .await?
        }
        ClientCommand::Upload { conversation, file } => {
            api.token()?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = file.file_name().and_then(|n| n.to_str()).context("the file needs a name")?;
            let req = api
                .req(Method::POST, &format!("/conversations/{conversation}/attachments"))
                .header("x-file-name", haven_http::file_name::encode(name))
                .body(bytes);
            answer(req.send().await?).await?
        }
        ClientCommand::Download { attachment, output } => {
            api.token()?;
            let resp = api.req(Method::GET, &format!("/attachments/{attachment}")).send().await?;
            if !resp.status().is_success() {
                answer(resp).await?;
                return Ok(());
            }
            let bytes = resp.bytes().await?;
            std::fs::write(&output, &bytes).with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!("wrote {} bytes to {}", bytes.len(), output.display());
            return Ok(());
        }
    };
    print(&out)
}
