//! The outbox worker: takes due texts from the durable outbox and hands them to the
//! organisation's gateway. A text is claimed under a lease (and its consent checked again) in
//! one transaction, sent, then recorded as sent with the provider's id, retried with backoff,
//! or failed. If a worker dies between handing a text over and recording the answer, the lease
//! runs out and the next worker first asks the provider whether it already has the text, so a
//! crash never sends it twice; a provider that cannot be asked gets no second copy (the text
//! is marked failed with `uncertain_after_crash` for staff to follow up).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use haven_domain::OrgId;
use haven_domain::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
use haven_domain::sms::retry_delay;
use haven_sms::{GatewayError, GatewayEvent, OutboundSms, SmsGateway};
use haven_store::StoredText;
use jiff::SignedDuration;
use tokio::sync::{Notify, mpsc};

use crate::texting::{SealedText, TEXTING};
use crate::{App, AppError, AppResult};

/// How long a worker owns a claimed text before another may take it over.
const LEASE: SignedDuration = SignedDuration::from_secs(60);
/// Texts claimed per pass.
const BATCH: u32 = 64;
/// Texts handed to gateways at once, per lane (two lanes: see [`App::run_outbox`]).
const IN_FLIGHT: usize = 32;

/// Live texting state of one node: the organisations' gateways and the worker's wake-up.
#[derive(Default)]
pub(crate) struct TextingRuntime {
    gateways: RwLock<HashMap<OrgId, Arc<dyn SmsGateway>>>,
    wake: Notify,
}

impl TextingRuntime {
    /// Drops an organisation's gateway (its settings changed), closing any connection it holds.
    pub(crate) fn forget(&self, org: OrgId) {
        self.gateways.write().expect("gateway cache").remove(&org);
    }

    /// Tells the worker there is something to send.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// What one pass of the worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxPass {
    /// Texts the provider accepted (including ones found already accepted after a crash).
    pub sent: usize,
    /// Attempts that failed and will be retried.
    pub retrying: usize,
    /// Texts failed for good.
    pub failed: usize,
    /// Texts claimed in this pass (the rest were postponed or cancelled).
    pub claimed: usize,
    /// Due texts another worker (a lane of this node, or another node) leased first.
    pub lost: usize,
}

enum Outcome {
    /// The provider has the text (its id); it is recorded with others in one transaction.
    Accepted(Box<StoredText>, &'static str, String),
    Retrying,
    Failed,
}

impl App {
    /// The gateway of an organisation, built on first use. Connection-holding gateways report
    /// inbound texts and receipts back into [`App::receive_sms`] and [`App::sms_status`].
    async fn gateway(&self, org: OrgId) -> AppResult<Arc<dyn SmsGateway>> {
        if let Some(g) = self.texting.gateways.read().expect("gateway cache").get(&org) {
            return Ok(g.clone());
        }
        let (_, config) = self.gateway_config(org).await?.ok_or_else(|| {
            AppError::Conflict("texting_not_configured", "the organisation has no SMS gateway".into())
        })?;
        let (tx, mut rx) = mpsc::channel::<GatewayEvent>(256);
        let gateway = config.connect(tx).map_err(|e| AppError::Unavailable(e.to_string()))?;
        let app = self.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let done = match event {
                    GatewayEvent::Inbound(sms) => app.receive_sms(org, sms).await.map(|_| ()),
                    GatewayEvent::Status(report) => app.sms_status(org, report).await,
                };
                if let Err(e) = done {
                    tracing::warn!(org = %org, error = %e, "an event from the SMS gateway could not be recorded");
                }
            }
        });
        self.texting.gateways.write().expect("gateway cache").insert(org, gateway.clone());
        Ok(gateway)
    }

    /// Starts the gateways of organisations whose gateway holds a connection (SMPP binds at
    /// start-up, so inbound texts arrive without waiting for a first send).
    pub async fn start_gateways(&self) -> AppResult<()> {
        for org in self.store.sms_gateway_orgs().await? {
            if let Err(e) = self.gateway(org).await {
                tracing::warn!(org = %org, error = %e, "an SMS gateway did not start");
            }
        }
        Ok(())
    }

    /// Runs the outbox until `stop` resolves: a pass whenever texts are queued, and at least
    /// every second for texts whose time has come. Passes run in two lanes at once, so
    /// one lane's claim and record (database round trips and commits) overlap another's texts
    /// being with the gateways; the leases keep them from taking the same text, as they do for
    /// two nodes. Once `stop` resolves, each lane finishes its pass and returns.
    pub async fn run_outbox(&self, stop: impl std::future::Future<Output = ()>) {
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let stopper = async move {
            stop.await;
            let _ = stopping.send(true);
        };
        tokio::join!(stopper, self.outbox_lane(stopped.clone()), self.outbox_lane(stopped));
    }

    async fn outbox_lane(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while !*stopped.borrow() {
            let busy = match self.outbox_pass().await {
                // A text lost to the other lane means more may be due: look again at once.
                Ok(pass) => pass.claimed > 0 || pass.lost > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox pass failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = stopped.changed() => {}
                _ = self.texting.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One pass: claims the due texts and sends them.
    pub async fn outbox_pass(&self) -> AppResult<OutboxPass> {
        let now = self.now();
        let settings = self.settings.texting.clone();
        let hold = move |t: &StoredText| {
            if t.kind.exempt() || t.urgent {
                return None;
            }
            Some(settings.next_window(now, t.time_zone.as_deref(), t.region.as_deref()))
                .filter(|at| *at > now)
        };
        let cancel = |t: &StoredText, why: &'static str| {
            self.outbox_record(t, "sms-cancel", AuditOutcome::MinorFailure).code(why)
        };
        let (claimed, lost) = self.store.claim_texts(now, LEASE, BATCH, hold, cancel).await?;
        let mut pass = OutboxPass { claimed: claimed.len(), lost, ..Default::default() };
        let mut accepted = Vec::new();
        let mut running = tokio::task::JoinSet::new();
        for text in claimed {
            while running.len() >= IN_FLIGHT {
                tally(&mut pass, &mut accepted, running.join_next().await);
                if accepted.len() >= IN_FLIGHT {
                    pass.sent += self.record_sent(std::mem::take(&mut accepted)).await;
                }
            }
            let app = self.clone();
            running.spawn(async move { app.deliver(text).await });
        }
        while let Some(done) = running.join_next().await {
            tally(&mut pass, &mut accepted, Some(done));
        }
        pass.sent += self.record_sent(accepted).await;
        Ok(pass)
    }

    /// Records texts the provider accepted, in one transaction with their audit records (one
    /// commit for many texts, not one each). If that fails they stay leased, and once the lease
    /// runs out they are looked up at the provider, never sent twice.
    async fn record_sent(&self, accepted: Vec<(Box<StoredText>, &'static str, String)>) -> usize {
        if accepted.is_empty() {
            return 0;
        }
        let recs: Vec<AuditRecord> = accepted
            .iter()
            .map(|(t, _, _)| self.outbox_record(t, "sms-send", AuditOutcome::Success))
            .collect();
        let rows: Vec<_> = accepted
            .iter()
            .zip(&recs)
            .map(|((t, provider, id), rec)| (t.id, *provider, id.as_str(), rec))
            .collect();
        match self.store.texts_sent(&rows, self.now()).await {
            Ok(recorded) => recorded.len(),
            Err(e) => {
                tracing::warn!(error = %e, texts = accepted.len(), "sent texts could not be recorded; they will be looked up at the provider");
                0
            }
        }
    }

    fn outbox_record(&self, t: &StoredText, subtype: &str, outcome: AuditOutcome) -> AuditRecord {
        let agent =
            AuditAgent { system: Some(format!("{}:outbox", self.settings.node_name)), ..Default::default() };
        let mut r = self
            .record(Some(t.org_id), TEXTING, subtype, AuditAction::E, outcome, agent)
            .entity("text", t.id);
        if let Some(p) = t.patient_id {
            r = r.entity("patient", p);
        }
        r
    }

    async fn deliver(&self, text: StoredText) -> AppResult<Outcome> {
        let org = text.org_id;
        let gateway = match self.gateway(org).await {
            Ok(g) => g,
            Err(_) => return self.attempt_failed(&text, "texting_not_configured", true).await,
        };
        let org_key = self.org_key(org).await?;
        let sealed: SealedText =
            Self::open_org(&org_key, org, "sms-outbox", &text.id.to_string(), &text.sealed)?;
        let status_callback = (gateway.provider() == haven_sms::twilio::PROVIDER)
            .then(|| self.public_url(&format!("/webhooks/twilio/{org}/status")));
        let sms =
            OutboundSms { id: text.id.to_string(), to: sealed.phone, body: sealed.body, status_callback };
        if text.uncertain() {
            let since = text.claimed_at.unwrap_or(text.created_at);
            match gateway.find(&sms, since).await {
                Ok(Some(accepted)) => {
                    return Ok(Outcome::Accepted(Box::new(text), gateway.provider(), accepted.provider_id));
                }
                Ok(None) => {}
                Err(GatewayError::Unavailable(_) | GatewayError::Config(_) | GatewayError::Uncertain(_)) => {
                    // Cannot tell yet whether the provider has it: leave it leased, ask again later.
                    return Ok(Outcome::Retrying);
                }
                Err(GatewayError::Refused { .. }) => {
                    return self.attempt_failed(&text, "uncertain_after_crash", false).await;
                }
            }
        }
        match gateway.send(&sms).await {
            Ok(accepted) => Ok(Outcome::Accepted(Box::new(text), gateway.provider(), accepted.provider_id)),
            Err(GatewayError::Refused { code }) => {
                self.attempt_failed(&text, &format!("refused:{code}"), false).await
            }
            Err(GatewayError::Unavailable(e)) => {
                tracing::info!(text = %text.id, error = %e, "SMS provider unavailable; will retry");
                self.attempt_failed(&text, "provider_unavailable", true).await
            }
            Err(GatewayError::Uncertain(e)) => {
                tracing::info!(text = %text.id, error = %e, "no answer from the SMS provider; will look the text up");
                let now = self.now();
                let check_at = now + retry_delay(text.attempts).unwrap_or(LEASE);
                let rec = self.outbox_record(&text, "sms-send", AuditOutcome::MinorFailure).code("uncertain");
                self.store.text_uncertain(text.id, check_at, now, &rec).await?;
                Ok(Outcome::Retrying)
            }
            Err(GatewayError::Config(e)) => {
                tracing::warn!(org = %org, error = %e, "SMS gateway misconfigured");
                self.attempt_failed(&text, "gateway_misconfigured", true).await
            }
        }
    }

    async fn attempt_failed(&self, text: &StoredText, code: &str, retry: bool) -> AppResult<Outcome> {
        let now = self.now();
        let retry_at = if retry { retry_delay(text.attempts).map(|d| now + d) } else { None };
        let outcome =
            if retry_at.is_some() { AuditOutcome::MinorFailure } else { AuditOutcome::SeriousFailure };
        let code_only: String = code.chars().take(64).collect();
        let rec = self.outbox_record(text, "sms-send", outcome).code(&code_only);
        self.store.text_failed(text.id, &code_only, retry_at, now, &rec).await?;
        Ok(if retry_at.is_some() { Outcome::Retrying } else { Outcome::Failed })
    }
}

fn tally(
    pass: &mut OutboxPass,
    accepted: &mut Vec<(Box<StoredText>, &'static str, String)>,
    done: Option<Result<AppResult<Outcome>, tokio::task::JoinError>>,
) {
    match done {
        Some(Ok(Ok(Outcome::Accepted(text, provider, id)))) => accepted.push((text, provider, id)),
        Some(Ok(Ok(Outcome::Retrying))) => pass.retrying += 1,
        Some(Ok(Ok(Outcome::Failed))) => pass.failed += 1,
        Some(Ok(Err(e))) => {
            tracing::warn!(error = %e, "a text could not be recorded; its lease will run out and it will be reconciled")
        }
        Some(Err(e)) => tracing::error!(error = %e, "an outbox task panicked"),
        None => {}
    }
}
