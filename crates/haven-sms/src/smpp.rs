//! SMPP 3.4 over one persistent transceiver bind, through the `rusmppc` client.
//!
//! A background task connects, binds as a transceiver, and keeps the bind alive with
//! enquire_link; when the connection drops or a bind fails it retries forever, waiting 1 s,
//! doubling to 60 s, until the [`Smpp`] value is dropped. [`Smpp::send`](SmsGateway::send)
//! submits on the current bind and answers at once when there is none: `Config` after the
//! SMSC refused our credentials, `Unavailable` otherwise. A submit that may have reached the
//! SMSC without a usable answer is `Uncertain`; `find` cannot resolve it (query_sm needs the
//! very message_id that was lost), so such a text waits for an operator.
//!
//! - Outbound: submit_sm asking for a final delivery receipt; the submit_sm_resp's
//!   message_id is the provider id. Plain ASCII bodies go as the SMSC default alphabet, any
//!   other body as UCS-2; a body longer than one SMS goes in the message_payload TLV for the
//!   SMSC to split (`smpp/text.rs` says why).
//! - Inbound: each deliver_sm becomes a [`GatewayEvent`] (a receipt when esm_class says so,
//!   otherwise a text from a patient) and is acknowledged only once the event is queued, so
//!   the SMSC redelivers whatever a crash lost. Mobile-originated texts carry no id in SMPP
//!   3.4; the provider id is derived from the text (`text::mo_id` weighs the trade-off).
//! - Logs: the SMPP codec logs whole PDUs (bodies, numbers, the bind password) at debug
//!   level, so the connection runs with logging switched off; this module logs message ids,
//!   statuses and errors only.

mod text;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use rusmpp::pdus::{BindTransceiver, DeliverSm, DeliverSmResp, SubmitSm};
use rusmpp::tlvs::{MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::types::{AnyOctetString, COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, InterfaceVersion, MessagePayload, Npi, RegisteredDelivery, Ton};
use rusmpp::{CommandStatus, Pdu};
use rusmppc::error::Error as SmppError;
use rusmppc::{Client, ConnectionBuilder, Event};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::instrument::WithSubscriber;

use crate::{
    Accepted, BoxFuture, GatewayError, GatewayEvent, InboundSms, OutboundSms, SmsGateway, StatusReport,
};

/// The provider name stored with texts.
pub const PROVIDER: &str = "smpp";

/// The longest any request (connect, bind, submit, enquire_link) may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Room for a deliver_sm whose message_payload holds a long text.
const MAX_COMMAND_LENGTH: usize = 70_000;

/// TON "international" and NPI "ISDN (E.164)": how E.164 numbers are addressed.
const TON_INTERNATIONAL: u8 = 1;
const TON_ALPHANUMERIC: u8 = 5;
const NPI_ISDN: u8 = 1;

/// An SMSC's settings.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SmppConfig {
    /// The SMSC's host name or IP address.
    pub host: String,
    /// The SMSC's port (default 2775).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Our system_id, at most 15 characters.
    pub system_id: String,
    /// The bind password, at most 8 characters.
    pub password: String,
    /// The system_type the SMSC expects, if any (default empty).
    #[serde(default)]
    pub system_type: String,
    /// Our sender address: an E.164 number (`+…`), a short code, or an alphanumeric sender id.
    pub source_addr: String,
    /// The sender's type of number (default 1, international; 5 for an alphanumeric id).
    #[serde(default = "default_ton")]
    pub source_addr_ton: u8,
    /// The sender's numbering plan (default 1, ISDN/E.164).
    #[serde(default = "default_npi")]
    pub source_addr_npi: u8,
    /// Recipients' type of number (default 1, international: recipients are E.164).
    #[serde(default = "default_ton")]
    pub dest_addr_ton: u8,
    /// Recipients' numbering plan (default 1, ISDN/E.164).
    #[serde(default = "default_npi")]
    pub dest_addr_npi: u8,
    /// Seconds between enquire_links on an idle bind (default 30).
    #[serde(default = "default_enquire_link_secs")]
    pub enquire_link_secs: u64,
}

fn default_port() -> u16 {
    2775
}

fn default_ton() -> u8 {
    TON_INTERNATIONAL
}

fn default_npi() -> u8 {
    NPI_ISDN
}

fn default_enquire_link_secs() -> u64 {
    30
}

impl fmt::Debug for SmppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmppConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("system_id", &self.system_id)
            .field("password", &"[redacted]")
            .field("system_type", &self.system_type)
            .field("source_addr", &self.source_addr)
            .field("source_addr_ton", &self.source_addr_ton)
            .field("source_addr_npi", &self.source_addr_npi)
            .field("dest_addr_ton", &self.dest_addr_ton)
            .field("dest_addr_npi", &self.dest_addr_npi)
            .field("enquire_link_secs", &self.enquire_link_secs)
            .finish()
    }
}

impl SmppConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if self.host.is_empty() || self.host.len() > 253 || !printable(&self.host) {
            return Err("host must be a host name or IP address".into());
        }
        if self.port == 0 {
            return Err("port must not be 0".into());
        }
        // SMPP's C-octet strings: system_id 16 and password 9 octets, each with its NUL.
        if self.system_id.is_empty() || self.system_id.len() > 15 || !printable(&self.system_id) {
            return Err("system_id must be 1 to 15 printable ASCII characters".into());
        }
        if self.password.len() > 8 || !printable(&self.password) {
            return Err("password must be at most 8 printable ASCII characters".into());
        }
        if self.system_type.len() > 12 || !printable(&self.system_type) {
            return Err("system_type must be at most 12 printable ASCII characters".into());
        }
        match self.source_addr_ton {
            TON_INTERNATIONAL if !crate::is_e164(&self.source_addr) => {
                return Err("source_addr must be an E.164 number when source_addr_ton is 1".into());
            }
            TON_ALPHANUMERIC
                if !(1..=11).contains(&self.source_addr.len())
                    || !self.source_addr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') =>
            {
                return Err("an alphanumeric source_addr must be 1 to 11 letters or digits".into());
            }
            TON_INTERNATIONAL | TON_ALPHANUMERIC => {}
            _ if !(1..=20).contains(&self.source_addr.len())
                || !self.source_addr.bytes().all(|b| b.is_ascii_digit()) =>
            {
                return Err("source_addr must be 1 to 20 digits for this source_addr_ton".into());
            }
            _ => {}
        }
        if !(1..=3600).contains(&self.enquire_link_secs) {
            return Err("enquire_link_secs must be between 1 and 3600".into());
        }
        Ok(())
    }

    /// source_addr as it goes on the wire: E.164 without its `+`.
    fn wire_source_addr(&self) -> &str {
        self.source_addr.strip_prefix('+').unwrap_or(&self.source_addr)
    }
}

/// The state of the bind, as `send` sees it.
enum Link {
    Bound(Client),
    /// Not bound, and what `send` answers meanwhile: [`GatewayError::Config`] after the SMSC
    /// refused our credentials, [`GatewayError::Unavailable`] otherwise.
    Down(GatewayError),
}

/// The SMPP gateway: a handle on the bind kept by a background task.
pub struct Smpp {
    config: Arc<SmppConfig>,
    link: watch::Receiver<Link>,
    /// Dropped with the gateway, which tells the task to unbind and stop.
    _stop: oneshot::Sender<()>,
}

impl Smpp {
    /// Starts the background task that connects, binds and reconnects, reporting inbound texts
    /// and delivery receipts on `events`. Returns at once; sends fail with
    /// [`GatewayError::Unavailable`] until the first bind succeeds.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(config: SmppConfig, events: mpsc::Sender<GatewayEvent>) -> Self {
        let config = Arc::new(config);
        let (link_tx, link) =
            watch::channel(Link::Down(GatewayError::Unavailable("SMPP is not bound yet".into())));
        let (stop, stop_rx) = oneshot::channel();
        tokio::spawn(run(config.clone(), link_tx, events, stop_rx));
        Smpp { config, link, _stop: stop }
    }

    fn client(&self) -> Result<Client, GatewayError> {
        match &*self.link.borrow() {
            Link::Bound(client) => Ok(client.clone()),
            Link::Down(e) => Err(e.clone()),
        }
    }
}

impl SmsGateway for Smpp {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn send<'a>(&'a self, sms: &'a OutboundSms) -> BoxFuture<'a, Result<Accepted, GatewayError>> {
        Box::pin(async move {
            let client = self.client()?;
            let submit = submit_sm(&self.config, sms)?;
            // A connection already gone is the one case where rusmppc's "connection closed"
            // proves the text was never written; afterwards it may mean the answer was lost.
            if !client.is_active() {
                return Err(GatewayError::Unavailable("SMPP is not bound".into()));
            }
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.submit_sm(submit))
                .await
                .map_err(|_| GatewayError::Uncertain("the SMSC did not answer submit_sm in time".into()))?;
            match answer {
                Ok(resp) => {
                    let message_id = resp.message_id().to_string();
                    if message_id.is_empty() {
                        return Err(GatewayError::Uncertain(
                            "the SMSC accepted a text without a message_id".into(),
                        ));
                    }
                    tracing::debug!(sms_id = %sms.id, %message_id, "submit_sm accepted");
                    Ok(Accepted { provider_id: message_id })
                }
                Err(SmppError::UnexpectedResponse { response }) if u32::from(response.status()) != 0 => {
                    let status = u32::from(response.status());
                    tracing::debug!(sms_id = %sms.id, status = %format_args!("0x{status:08x}"), "submit_sm refused");
                    Err(submit_error(status))
                }
                // Nothing reached the SMSC: the command could not be encoded.
                Err(e @ SmppError::Encode(_)) => Err(GatewayError::Unavailable(describe(&e))),
                // Possibly sent, but no usable answer: a timeout, a write that failed partway,
                // a lost connection, a garbled response.
                Err(e) => Err(GatewayError::Uncertain(describe(&e))),
            }
        })
    }

    fn find<'a>(
        &'a self,
        _sms: &'a OutboundSms,
        _since: jiff::Timestamp,
    ) -> BoxFuture<'a, Result<Option<Accepted>, GatewayError>> {
        // query_sm needs the message_id, which is exactly what a crash before recording the
        // submit_sm_resp loses; SMPP has no search by recipient or content.
        Box::pin(async {
            Err(GatewayError::Unavailable(
                "SMPP cannot look up earlier submissions (query_sm needs the unrecorded message_id)".into(),
            ))
        })
    }
}

fn submit_sm(config: &SmppConfig, sms: &OutboundSms) -> Result<SubmitSm, GatewayError> {
    // The SMSC would refuse anything else with ESME_RINVDSTADR; refuse it the same way here.
    let invalid_destination = || GatewayError::Refused { code: format!("0x{:08x}", 0x0Bu32) };
    if !crate::is_e164(&sms.to) {
        return Err(invalid_destination());
    }
    let destination = COctetString::from_str(&sms.to[1..]).map_err(|_| invalid_destination())?;
    let source = COctetString::from_str(config.wire_source_addr())
        .map_err(|_| GatewayError::Config("source_addr does not fit SMPP".into()))?;
    let body = text::encode(&sms.body);
    let builder = SubmitSm::builder()
        .source_addr_ton(Ton::from(config.source_addr_ton))
        .source_addr_npi(Npi::from(config.source_addr_npi))
        .source_addr(source)
        .dest_addr_ton(Ton::from(config.dest_addr_ton))
        .dest_addr_npi(Npi::from(config.dest_addr_npi))
        .destination_addr(destination)
        .esm_class(EsmClass::default())
        // A receipt for the final outcome, delivered or not.
        .registered_delivery(RegisteredDelivery::from(0x01))
        .data_coding(DataCoding::from(body.data_coding));
    let builder = if body.fits_one_sms() {
        // One SMS is at most 160 octets, well inside short_message's 254.
        let octets = OctetString::from_vec(body.octets)
            .map_err(|_| GatewayError::Refused { code: "too-long".into() })?;
        builder.short_message(octets)
    } else {
        builder.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(MessagePayload::new(
            AnyOctetString::from_vec(body.octets),
        )))
    };
    Ok(builder.build())
}

/// A submit_sm's non-zero command_status as an error.
fn submit_error(status: u32) -> GatewayError {
    let code = format!("0x{status:08x}");
    match status {
        // ESME_RMSGQFUL, ESME_RTHROTTLED.
        0x14 | 0x58 => GatewayError::Unavailable(format!("the SMSC asked us to slow down ({code})")),
        // ESME_RINVBNDSTS, ESME_RSYSERR, ESME_RSUBMITFAIL, ESME_RX_T_APPN, ESME_RDELIVERYFAILURE,
        // ESME_RUNKNOWNERR: the SMSC's trouble, not this text's.
        0x04 | 0x08 | 0x45 | 0x64 | 0xFE | 0xFF => GatewayError::Unavailable(format!("SMSC error {code}")),
        // Our sender address or addressing settings (ESME_RINVSRCADR, ESME_RINVSRCTON,
        // ESME_RINVSRCNPI, ESME_RINVDSTTON, ESME_RINVDSTNPI): every text would fail alike.
        0x0A | 0x48 | 0x49 | 0x50 | 0x51 => {
            GatewayError::Config(format!("the SMSC refused our addressing settings ({code})"))
        }
        _ => GatewayError::Refused { code },
    }
}

/// A bind's non-zero command_status as an error.
fn bind_error(status: u32) -> GatewayError {
    let code = format!("0x{status:08x}");
    match status {
        // ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RINVSYSID, ESME_RINVSYSTYP. The task keeps
        // retrying, so a bind refused for a passing reason still recovers by itself.
        0x0D | 0x0E | 0x0F | 0x53 => {
            GatewayError::Config(format!("the SMSC refused the bind ({code}): check system_id and password"))
        }
        _ => GatewayError::Unavailable(format!("the SMSC refused the bind ({code})")),
    }
}

/// An error for logs and messages: rusmppc's own text of an unexpected response is the
/// whole PDU.
fn describe(e: &SmppError) -> String {
    match e {
        SmppError::Connect(e) | SmppError::Io(e) => format!("SMPP connection error: {e}"),
        SmppError::ConnectionClosed | SmppError::ConnectionClosedByPeer => {
            "the SMPP connection closed".into()
        }
        SmppError::EnquireLinkTimeout { .. } => "the SMSC stopped answering enquire_link".into(),
        SmppError::ResponseTimeout { .. } => "the SMSC did not answer in time".into(),
        SmppError::UnexpectedResponse { response } => {
            format!("unexpected {:?} (status 0x{:08x})", response.id(), u32::from(response.status()))
        }
        SmppError::Encode(_) => "could not encode an SMPP command".into(),
        SmppError::Decode(_) => "the SMSC sent an SMPP command that could not be decoded".into(),
        _ => "SMPP error".into(),
    }
}

/// The connection task: bind, serve, and after a failure wait and start again.
async fn run(
    config: Arc<SmppConfig>,
    link: watch::Sender<Link>,
    events: mpsc::Sender<GatewayEvent>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let attempt = tokio::select! {
            _ = &mut stop => return,
            attempt = bind(&config) => attempt,
        };
        match attempt {
            Ok((client, incoming)) => {
                tracing::info!(host = %config.host, "SMPP bound as transceiver");
                backoff = MIN_BACKOFF;
                link.send_replace(Link::Bound(client.clone()));
                let ended = serve(&client, incoming, &events, &mut stop).await;
                link.send_replace(Link::Down(GatewayError::Unavailable("SMPP is not bound".into())));
                match ended {
                    Ended::Stopped => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), client.unbind()).await;
                        let _ = client.close().await;
                        return;
                    }
                    Ended::Lost(why) => {
                        tracing::warn!(reason = %why, retry_in = ?backoff, "SMPP bind lost");
                        let _ = client.close().await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "SMPP bind failed");
                link.send_replace(Link::Down(e));
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects and binds as a transceiver.
async fn bind(config: &SmppConfig) -> Result<(Client, impl Stream<Item = Event> + Unpin), GatewayError> {
    let stream =
        tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect((config.host.as_str(), config.port)))
            .await
            .map_err(|_| GatewayError::Unavailable("connecting to the SMSC timed out".into()))?
            .map_err(|e| GatewayError::Unavailable(format!("connecting to the SMSC: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (client, incoming, connection) = ConnectionBuilder::new()
        .max_command_length(MAX_COMMAND_LENGTH)
        .enquire_link_interval(Duration::from_secs(config.enquire_link_secs))
        .enquire_link_response_timeout(REQUEST_TIMEOUT)
        .response_timeout(REQUEST_TIMEOUT)
        // rusmppc speaks SMPP 5.0, whose PDUs are a superset of 3.4's; we bind as 3.4.
        .disable_interface_version_check()
        .no_spawn()
        .connected(stream);
    // No subscriber: the codec would log every PDU, bodies and password included.
    tokio::spawn(connection.with_subscriber(tracing::subscriber::NoSubscriber::default()));

    let request = BindTransceiver::builder()
        .system_id(c_string("system_id", &config.system_id)?)
        .password(c_string("password", &config.password)?)
        .system_type(c_string("system_type", &config.system_type)?)
        .interface_version(InterfaceVersion::Smpp3_4)
        .addr_ton(Ton::Unknown)
        .addr_npi(Npi::Unknown)
        .address_range(COctetString::empty())
        .build();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.bind_transceiver(request)).await;
    let error = match answer {
        Ok(Ok(_)) => return Ok((client, incoming)),
        Ok(Err(SmppError::UnexpectedResponse { response })) if u32::from(response.status()) != 0 => {
            bind_error(u32::from(response.status()))
        }
        Ok(Err(e)) => GatewayError::Unavailable(describe(&e)),
        Err(_) => GatewayError::Unavailable("the SMSC did not answer bind_transceiver in time".into()),
    };
    let _ = client.close().await;
    Err(error)
}

fn c_string<const MIN: usize, const MAX: usize>(
    name: &str,
    value: &str,
) -> Result<COctetString<MIN, MAX>, GatewayError> {
    COctetString::from_str(value).map_err(|_| GatewayError::Config(format!("{name} does not fit SMPP")))
}

enum Ended {
    /// The gateway was dropped.
    Stopped,
    /// The connection or the bind is gone.
    Lost(String),
}

/// Handles what the SMSC sends on a bound connection until it ends.
async fn serve(
    client: &Client,
    mut incoming: impl Stream<Item = Event> + Unpin,
    events: &mpsc::Sender<GatewayEvent>,
    stop: &mut oneshot::Receiver<()>,
) -> Ended {
    loop {
        let event = tokio::select! {
            _ = &mut *stop => return Ended::Stopped,
            event = incoming.next() => event,
        };
        let command = match event {
            None => return Ended::Lost("the SMPP connection closed".into()),
            Some(Event::Error(e)) => match e {
                SmppError::Io(_)
                | SmppError::ConnectionClosedByPeer
                | SmppError::EnquireLinkTimeout { .. } => {
                    return Ended::Lost(describe(&e));
                }
                e => {
                    tracing::warn!(error = %describe(&e), "SMPP error");
                    continue;
                }
            },
            Some(Event::Incoming(command)) => command,
        };
        let sequence = command.sequence_number();
        match command.pdu() {
            Some(Pdu::DeliverSm(deliver)) => {
                let event = inbound_event(deliver);
                let status = tokio::select! {
                    _ = &mut *stop => return Ended::Stopped,
                    sent = events.send(event) => match sent {
                        Ok(()) => CommandStatus::EsmeRok,
                        // Nobody is listening: a temporary error makes the SMSC deliver it again.
                        Err(_) => CommandStatus::EsmeRxTAppn,
                    },
                };
                if let Err(e) =
                    client.status(status).deliver_sm_resp(sequence, DeliverSmResp::default()).await
                {
                    return Ended::Lost(describe(&e));
                }
            }
            Some(Pdu::Unbind) => {
                let _ = client.unbind_resp(sequence).await;
                return Ended::Lost("the SMSC unbound".into());
            }
            // alert_notification has no response; answers that arrived after their request
            // timed out have nobody waiting.
            Some(Pdu::AlertNotification(_)) => {}
            _ if command.id().is_response() => {}
            _ => {
                tracing::debug!(command = ?command.id(), "SMPP command not supported, answered generic_nack");
                let _ = client.status(CommandStatus::EsmeRinvcmdid).generic_nack(sequence).await;
            }
        }
    }
}

/// A deliver_sm as a delivery receipt or a text from a patient.
fn inbound_event(deliver: &DeliverSm) -> GatewayEvent {
    let mut payload: &[u8] = &[];
    let mut receipted_id = None;
    let mut state = None;
    let mut user_reference = None;
    for tlv in deliver.tlvs() {
        match tlv.value() {
            Some(TlvValue::MessagePayload(p)) => payload = p.value.as_ref(),
            Some(TlvValue::ReceiptedMessageId(id)) => receipted_id = Some(id.to_string()),
            Some(TlvValue::MessageState(s)) => state = Some(u8::from(*s)),
            Some(TlvValue::UserMessageReference(r)) => user_reference = Some(r.value),
            _ => {}
        }
    }
    let short: &[u8] = deliver.short_message().as_ref();
    let octets = if short.is_empty() { payload } else { short };
    let esm_class = u8::from(deliver.esm_class);
    let data_coding = u8::from(deliver.data_coding);
    let udhi = esm_class & 0x40 != 0;

    // 0x04: an SMSC delivery receipt; 0x20: an intermediate notification.
    if esm_class & 0x24 != 0 {
        let parsed = text::parse_receipt(&text::decode(data_coding, udhi, octets));
        let provider_id = receipted_id.clone().or_else(|| parsed.as_ref().map(|r| r.message_id.clone()));
        let state = state.map(text::message_state).or_else(|| parsed.as_ref().map(|r| r.state));
        if let (Some(provider_id), Some(state)) = (provider_id, state) {
            let error_code = parsed.and_then(|r| r.error_code);
            tracing::debug!(%provider_id, ?state, error_code = ?error_code, "delivery receipt");
            return GatewayEvent::Status(StatusReport { provider: PROVIDER, provider_id, state, error_code });
        }
        // A receipt nobody can read is better seen by staff as a text than lost.
        tracing::warn!("a delivery receipt without a message id or state, taken as a text");
    }

    let source = deliver.source_addr.as_str();
    let destination = deliver.destination_addr.as_str();
    let provider_id = receipted_id.unwrap_or_else(|| {
        text::mo_id(&text::MoKey {
            source_addr: source,
            destination_addr: destination,
            data_coding,
            octets,
            schedule_delivery_time: &deliver.schedule_delivery_time.to_string(),
            user_message_reference: user_reference,
            day: jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date(),
        })
    });
    tracing::debug!(%provider_id, "mobile-originated text");
    GatewayEvent::Inbound(InboundSms {
        provider: PROVIDER,
        provider_id,
        from: e164(source, u8::from(deliver.source_addr_ton)),
        to: e164(destination, u8::from(deliver.dest_addr_ton)),
        body: text::decode(data_coding, udhi, octets),
    })
}

/// An address as Haven stores it: an international number, or a TON-less one long enough to
/// be, gets its `+`; national numbers, short codes and alphanumeric ids stay as the SMSC sent
/// them.
fn e164(addr: &str, ton: u8) -> String {
    let digits = !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_digit());
    let international = ton == TON_INTERNATIONAL || (ton == 0 && (8..=15).contains(&addr.len()));
    if digits && international { format!("+{addr}") } else { addr.to_owned() }
}

#[cfg(test)]
mod tests;
