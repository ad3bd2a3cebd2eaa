//! SMS gateways. [`SmsGateway`] is what the outbox worker sends through; each adapter speaks
//! its provider's real wire protocol: [`twilio`] the Messages REST API (and verifies the
//! provider's webhook signatures), [`smpp`] SMPP 3.4 over a persistent bind.
//!
//! Nothing here decides whether a text may be sent: consent, quiet hours and caps are enforced
//! before a text reaches a gateway. Credentials never appear in `Debug` output or logs.

pub mod smpp;
pub mod twilio;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// A boxed future, so gateways can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A text to send.
#[derive(Clone)]
pub struct OutboundSms {
    /// Haven's id of the text (the outbox row), for de-duplication and correlation.
    pub id: String,
    /// Recipient, E.164.
    pub to: String,
    /// The text (no PHI by construction, but it may hold a link token or a one-time code).
    pub body: String,
    /// Where the provider should report delivery status, if it reports over HTTP.
    pub status_callback: Option<String>,
}

impl fmt::Debug for OutboundSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundSms").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The provider accepted a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The provider's id of the message (Twilio's `SM…` sid, the SMSC's message_id).
    pub provider_id: String,
}

/// Why a send failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The provider refused this text for good (bad number, blocked, …): do not retry.
    #[error("refused by the provider ({code})")]
    Refused {
        /// The provider's error code, e.g. Twilio's `21211` or an SMPP command_status.
        code: String,
    },
    /// The provider could not be reached or asked us to slow down: retry later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The request may have reached the provider but no usable answer came back (a timeout
    /// or a garbled response): the text must be looked up before it is sent again.
    #[error("no answer from the provider: {0}")]
    Uncertain(String),
    /// The gateway is misconfigured (wrong credentials, bad URL): retry after an admin fixes it.
    #[error("gateway misconfigured: {0}")]
    Config(String),
}

/// A delivery status reported by a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Still on its way (queued, sending, sent, accepted by the carrier).
    Sent,
    /// Delivered to the handset.
    Delivered,
    /// Not delivered (expired, rejected, undeliverable).
    Undelivered,
    /// Failed before leaving the provider.
    Failed,
}

/// A delivery report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// Which provider (`twilio`, `smpp`).
    pub provider: &'static str,
    /// The provider's message id, as returned by the send.
    pub provider_id: String,
    /// The new state.
    pub state: DeliveryState,
    /// The provider's error code, if any.
    pub error_code: Option<String>,
}

/// A text from a patient.
#[derive(Clone)]
pub struct InboundSms {
    /// Which provider (`twilio`, `smpp`).
    pub provider: &'static str,
    /// The provider's id of the message: inbound texts are de-duplicated by it.
    pub provider_id: String,
    /// Sender, E.164.
    pub from: String,
    /// Our number it was sent to.
    pub to: String,
    /// The text (PHI: never logged).
    pub body: String,
}

impl fmt::Debug for InboundSms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSms")
            .field("provider", &self.provider)
            .field("provider_id", &self.provider_id)
            .finish_non_exhaustive()
    }
}

/// What a gateway that holds a connection (SMPP) hears from its provider.
#[derive(Debug, Clone)]
pub enum GatewayEvent {
    /// A text from a patient.
    Inbound(InboundSms),
    /// A delivery report.
    Status(StatusReport),
}

/// A way to send texts.
pub trait SmsGateway: Send + Sync {
    /// The provider's name, as stored with each text (`twilio`, `smpp`).
    fn provider(&self) -> &'static str;

    /// Hands one text to the provider.
    fn send<'a>(&'a self, sms: &'a OutboundSms) -> BoxFuture<'a, Result<Accepted, GatewayError>>;

    /// After a crash between handing a text over and recording the answer: asks the provider
    /// whether it already has this text (sent at or after `since`). `Ok(None)` means it does
    /// not, so sending again cannot duplicate it. A provider that cannot answer says
    /// [`GatewayError::Unavailable`], and the text is held for an operator instead of resent.
    fn find<'a>(
        &'a self,
        sms: &'a OutboundSms,
        since: jiff::Timestamp,
    ) -> BoxFuture<'a, Result<Option<Accepted>, GatewayError>>;
}

/// A gateway's settings, as an organisation's administrator saves them (stored sealed).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum GatewayConfig {
    /// Twilio's Messages API.
    Twilio(twilio::TwilioConfig),
    /// An SMPP 3.4 SMSC.
    Smpp(smpp::SmppConfig),
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayConfig::Twilio(c) => c.fmt(f),
            GatewayConfig::Smpp(c) => c.fmt(f),
        }
    }
}

impl GatewayConfig {
    /// The provider's name.
    pub fn provider(&self) -> &'static str {
        match self {
            GatewayConfig::Twilio(_) => twilio::PROVIDER,
            GatewayConfig::Smpp(_) => smpp::PROVIDER,
        }
    }

    /// Our sending number (E.164) or sender id.
    pub fn from_number(&self) -> &str {
        match self {
            GatewayConfig::Twilio(c) => &c.from,
            GatewayConfig::Smpp(c) => &c.source_addr,
        }
    }

    /// Checks the settings; the message names the bad field, never a credential.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            GatewayConfig::Twilio(c) => c.validate(),
            GatewayConfig::Smpp(c) => c.validate(),
        }
    }

    /// Builds the gateway. Connection-holding gateways (SMPP) start their connection task here
    /// and report inbound texts and delivery receipts on `events`.
    pub fn connect(&self, events: mpsc::Sender<GatewayEvent>) -> Result<Arc<dyn SmsGateway>, GatewayError> {
        match self {
            GatewayConfig::Twilio(c) => Ok(Arc::new(twilio::Twilio::new(c.clone())?)),
            GatewayConfig::Smpp(c) => Ok(Arc::new(smpp::Smpp::start(c.clone(), events))),
        }
    }
}

/// Whether `s` is an E.164 number (`+` and 8 to 15 digits).
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}
