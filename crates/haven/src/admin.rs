//! `haven admin …`: the operator's commands, run directly against the database with the same
//! use cases (and audit records) as the API, acting as the operator.

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::Subcommand;
use haven_app::admin::CreateUser;
use haven_app::{Actor, App};
use haven_crypto::Secret;
use haven_domain::OrgId;
use haven_domain::org::AttachmentKinds;
use haven_domain::roles::Role;

use crate::config::Conf;

/// Operator commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create an organisation.
    CreateOrg {
        /// Its name, e.g. "Riverside Clinic".
        #[arg(long)]
        name: String,
    },
    /// List organisations.
    ListOrgs,
    /// Create a user. Prints a generated password unless --password-stdin is given.
    CreateUser {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// Login name.
        #[arg(long)]
        username: String,
        /// Name shown to colleagues.
        #[arg(long)]
        display_name: String,
        /// A role (repeat for several): org_admin, clinician, nurse, front_desk, compliance_officer.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Read the initial password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Deactivate a user: their sessions end at once.
    DeactivateUser {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// Login name.
        #[arg(long)]
        username: String,
    },
    /// Remove a user's authenticator; they enrol again at next sign-in.
    ResetMfa {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// Login name.
        #[arg(long)]
        username: String,
    },
    /// List the users of an organisation.
    ListUsers {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
    },
    /// Show or change an organisation's security policy (unchanged values stay as they are).
    Policy {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// Require every user to enrol MFA: true or false.
        #[arg(long)]
        mfa_required: Option<bool>,
        /// End sessions after this many seconds without activity (30 to 14400).
        #[arg(long)]
        inactivity_timeout: Option<u32>,
        /// End sessions this many seconds after sign-in (300 to 43200).
        #[arg(long)]
        session_lifetime: Option<u32>,
        /// Largest attachment in bytes (0 turns attachments off; at most 1 GiB).
        #[arg(long)]
        max_attachment_bytes: Option<u64>,
        /// Kinds of file that may be shared, comma-separated: image, pdf, office, text
        /// (an empty value allows none).
        #[arg(long, value_parser = parse_kinds)]
        attachment_kinds: Option<AttachmentKinds>,
    },
}

fn parse_kinds(s: &str) -> Result<AttachmentKinds, String> {
    let names: String = s.split(',').map(str::trim).collect::<Vec<_>>().join(",");
    AttachmentKinds::from_storage(&names).ok_or_else(|| "kinds are image, pdf, office and text".to_owned())
}

async fn resolve_org(app: &App, org: &str) -> anyhow::Result<OrgId> {
    let orgs = app.orgs(&Actor::Operator).await?;
    if let Ok(id) = org.parse::<OrgId>()
        && orgs.iter().any(|o| o.id == id)
    {
        return Ok(id);
    }
    let matches: Vec<_> = orgs.iter().filter(|o| o.name.eq_ignore_ascii_case(org)).collect();
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => bail!("no organisation named {org:?} (see `haven admin list-orgs`)"),
        _ => bail!("several organisations are named {org:?}; give the id instead"),
    }
}

/// Runs an admin command.
pub async fn run(conf: &Conf, data_dir: &std::path::Path, cmd: AdminCommand) -> anyhow::Result<()> {
    let app = crate::serve::open_app(conf, data_dir).await?;
    let op = Actor::Operator;
    match cmd {
        AdminCommand::CreateOrg { name } => {
            let org = app.create_org(&op, &name).await?;
            println!("created organisation {} ({})", org.name, org.id);
        }
        AdminCommand::ListOrgs => {
            for o in app.orgs(&op).await? {
                println!("{}  {}", o.id, o.name);
            }
        }
        AdminCommand::CreateUser { org, username, display_name, roles, password_stdin } => {
            let org = resolve_org(&app, &org).await?;
            let roles = roles
                .iter()
                .map(|r| Role::parse(r).with_context(|| format!("--role: unknown role {r:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (password, show) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                (Secret::new(line.trim_end_matches(['\n', '\r']).to_owned()), false)
            } else {
                (app.generate_password(), true)
            };
            let printed = show.then(|| password.expose().clone());
            let input = CreateUser { username, display_name, roles, password };
            let user = app.create_user(&op, org, input).await?;
            println!("created user {} ({})", user.username, user.id);
            if let Some(p) = printed {
                println!("initial password (shown once): {p}");
            }
        }
        AdminCommand::DeactivateUser { org, username } => {
            let org = resolve_org(&app, &org).await?;
            let user = app.user_by_username(&op, org, &username).await?;
            app.deactivate_user(&op, org, user.id).await?;
            println!("deactivated {}; every session of theirs has ended", user.username);
        }
        AdminCommand::ResetMfa { org, username } => {
            let org = resolve_org(&app, &org).await?;
            let user = app.user_by_username(&op, org, &username).await?;
            app.reset_mfa(&op, org, user.id).await?;
            println!("reset MFA of {}; they will enrol again at next sign-in", user.username);
        }
        AdminCommand::Policy {
            org,
            mfa_required,
            inactivity_timeout,
            session_lifetime,
            max_attachment_bytes,
            attachment_kinds,
        } => {
            let org = resolve_org(&app, &org).await?;
            let mut policy = app.org(&op, org).await?.policy;
            let change = mfa_required.is_some()
                || inactivity_timeout.is_some()
                || session_lifetime.is_some()
                || max_attachment_bytes.is_some()
                || attachment_kinds.is_some();
            if let Some(v) = max_attachment_bytes {
                policy.max_attachment_bytes = v;
            }
            if let Some(v) = attachment_kinds {
                policy.attachment_kinds = v;
            }
            if let Some(v) = mfa_required {
                policy.mfa_required = v;
            }
            if let Some(v) = inactivity_timeout {
                policy.inactivity_timeout_seconds = v;
            }
            if let Some(v) = session_lifetime {
                policy.session_lifetime_seconds = v;
            }
            if change {
                policy = app.set_policy(&op, org, policy).await?.policy;
            }
            println!(
                "mfa_required = {}\ninactivity_timeout_seconds = {}\nsession_lifetime_seconds = {}\n\
                 max_attachment_bytes = {}\nattachment_kinds = {:?}",
                policy.mfa_required,
                policy.inactivity_timeout_seconds,
                policy.session_lifetime_seconds,
                policy.max_attachment_bytes,
                policy.attachment_kinds.to_storage()
            );
        }
        AdminCommand::ListUsers { org } => {
            let org = resolve_org(&app, &org).await?;
            let mut after: Option<String> = None;
            println!("{:<36}  {:<20} {:<12} {:<5} ROLES", "ID", "USERNAME", "STATUS", "MFA");
            loop {
                let page = app.users(&op, org, None, after.as_deref(), 200).await?;
                for u in &page.users {
                    let roles: Vec<&str> = u.roles.roles().iter().map(|r| r.as_str()).collect();
                    println!(
                        "{:<36}  {:<20} {:<12} {:<5} {}",
                        u.id,
                        u.username,
                        u.status.as_str(),
                        if u.mfa_enrolled { "yes" } else { "no" },
                        roles.join(",")
                    );
                }
                match page.next_after {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
    }
    app.store().close().await;
    Ok(())
}
