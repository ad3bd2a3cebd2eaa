//! Twilio's Programmable Messaging: outbound texts through the Messages REST API
//! (`POST /2010-04-01/Accounts/{sid}/Messages.json`, HTTP Basic auth, form-encoded), the
//! list endpoint to reconcile after a crash, and the `X-Twilio-Signature` check of inbound and
//! status webhooks (HMAC-SHA1 over the exact URL and the sorted parameters, base64), compared
//! in constant time before anything in the request is trusted.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use crate::{
    Accepted, BoxFuture, DeliveryState, GatewayError, InboundSms, OutboundSms, SmsGateway, StatusReport,
};

/// The provider name stored with texts.
pub const PROVIDER: &str = "twilio";

/// Twilio's API, unless a test or a regional edge says otherwise.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// An account's settings.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TwilioConfig {
    /// The account SID (`AC…`).
    pub account_sid: String,
    /// The auth token: signs webhooks and authenticates API calls.
    pub auth_token: String,
    /// Our sending number (E.164).
    pub from: String,
    /// The API's base URL (default `https://api.twilio.com`).
    #[serde(default = "default_api_base")]
    pub api_base: String,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.to_owned()
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[redacted]")
            .field("from", &self.from)
            .field("api_base", &self.api_base)
            .finish()
    }
}

impl TwilioConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(self.account_sid.starts_with("AC") && self.account_sid.len() == 34) {
            return Err("account_sid must be Twilio's 34-character AC… id".into());
        }
        if self.auth_token.len() < 16 {
            return Err("auth_token is too short".into());
        }
        if !crate::is_e164(&self.from) {
            return Err("from must be an E.164 number".into());
        }
        if !(self.api_base.starts_with("https://") || self.api_base.starts_with("http://127.0.0.1")) {
            return Err("api_base must be an https:// URL".into());
        }
        Ok(())
    }
}

/// The Twilio gateway.
pub struct Twilio {
    config: TwilioConfig,
    http: reqwest::Client,
}

impl Twilio {
    /// A gateway for one account.
    pub fn new(config: TwilioConfig) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| GatewayError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { config, http })
    }

    fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.config.api_base.trim_end_matches('/'),
            self.config.account_sid
        )
    }
}

/// Twilio's error body.
#[derive(Deserialize)]
struct ApiError {
    code: Option<i64>,
}

#[derive(Deserialize)]
struct MessageResource {
    sid: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    date_created: Option<String>,
}

#[derive(Deserialize)]
struct MessageList {
    messages: Vec<MessageResource>,
}

fn transport(e: reqwest::Error) -> GatewayError {
    // The error's URL holds no secret (credentials travel in a header), but keep it out anyway.
    GatewayError::Unavailable(e.without_url().to_string())
}

/// After a request was sent, only a refused connection proves Twilio never saw it.
fn after_send(e: reqwest::Error) -> GatewayError {
    if e.is_connect() { transport(e) } else { GatewayError::Uncertain(e.without_url().to_string()) }
}

async fn failure(resp: reqwest::Response) -> GatewayError {
    let status = resp.status();
    let code = resp.json::<ApiError>().await.ok().and_then(|e| e.code).map(|c| c.to_string());
    match status.as_u16() {
        401 | 403 | 404 => {
            GatewayError::Config(format!("Twilio answered {status} (check the account SID and token)"))
        }
        429 => GatewayError::Unavailable("Twilio asked us to slow down (429)".into()),
        400..=499 => GatewayError::Refused { code: code.unwrap_or_else(|| status.as_u16().to_string()) },
        _ => GatewayError::Unavailable(format!("Twilio answered {status}")),
    }
}

impl SmsGateway for Twilio {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn send<'a>(&'a self, sms: &'a OutboundSms) -> BoxFuture<'a, Result<Accepted, GatewayError>> {
        Box::pin(async move {
            let mut form = vec![
                ("To", sms.to.as_str()),
                ("From", self.config.from.as_str()),
                ("Body", sms.body.as_str()),
            ];
            if let Some(cb) = &sms.status_callback {
                form.push(("StatusCallback", cb.as_str()));
            }
            let resp = self
                .http
                .post(self.messages_url())
                .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
                .form(&form)
                .send()
                .await
                .map_err(after_send)?;
            if !resp.status().is_success() {
                return Err(failure(resp).await);
            }
            let m: MessageResource = resp.json().await.map_err(after_send)?;
            Ok(Accepted { provider_id: m.sid })
        })
    }

    fn find<'a>(
        &'a self,
        sms: &'a OutboundSms,
        since: jiff::Timestamp,
    ) -> BoxFuture<'a, Result<Option<Accepted>, GatewayError>> {
        Box::pin(async move {
            let resp = self
                .http
                .get(self.messages_url())
                .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
                .query(&[("To", sms.to.as_str()), ("From", self.config.from.as_str()), ("PageSize", "50")])
                .send()
                .await
                .map_err(transport)?;
            if !resp.status().is_success() {
                return Err(failure(resp).await);
            }
            let list: MessageList = resp.json().await.map_err(transport)?;
            // Twilio's dates have one-second resolution: allow for the truncation.
            let from = since - jiff::SignedDuration::from_secs(2);
            let found = list.messages.into_iter().find(|m| {
                m.body.as_deref() == Some(sms.body.as_str())
                    && m.date_created
                        .as_deref()
                        .and_then(|d| jiff::fmt::rfc2822::parse(d).ok())
                        .is_some_and(|d| d.timestamp() >= from)
            });
            Ok(found.map(|m| Accepted { provider_id: m.sid }))
        })
    }
}

/// The `X-Twilio-Signature` of a request: base64 of HMAC-SHA1 under the auth token over the
/// full URL Twilio requested followed by each POST parameter's name and value, sorted by name
/// (then value).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mac = mac(auth_token, url, params);
    data_encoding::BASE64.encode(&mac.finalize().into_bytes())
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<sha1::Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// Checks a webhook's signature in constant time. Twilio signs the URL as it requested it; a
/// port it added or left out is tried both ways, as Twilio's own validators do.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(given) = data_encoding::BASE64.decode(header.trim().as_bytes()) else {
        return false;
    };
    let mut ok = false;
    for candidate in url_variants(url) {
        // `verify_slice` compares in constant time; every variant is checked so timing does not
        // reveal which matched.
        ok |= mac(auth_token, &candidate, params).verify_slice(&given).is_ok();
    }
    ok
}

fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let (scheme, default_port) = if url.starts_with("https://") {
        ("https://", ":443")
    } else if url.starts_with("http://") {
        ("http://", ":80")
    } else {
        return out;
    };
    let rest = &url[scheme.len()..];
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(host_end);
    if let Some(bare) = host.strip_suffix(default_port) {
        out.push(format!("{scheme}{bare}{path}"));
    } else if !host.contains(':') {
        out.push(format!("{scheme}{host}{default_port}{path}"));
    }
    out
}

/// A parsed inbound-message webhook (`MessageSid`, `From`, `To`, `Body`).
pub fn inbound(params: &[(String, String)]) -> Option<InboundSms> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Some(InboundSms {
        provider: PROVIDER,
        provider_id: get("MessageSid").or_else(|| get("SmsSid"))?,
        from: get("From")?,
        to: get("To")?,
        body: get("Body").unwrap_or_default(),
    })
}

/// A parsed status callback (`MessageSid`, `MessageStatus`, `ErrorCode`).
pub fn status(params: &[(String, String)]) -> Option<StatusReport> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let state = match get("MessageStatus").or_else(|| get("SmsStatus"))?.as_str() {
        "delivered" | "read" => DeliveryState::Delivered,
        "undelivered" => DeliveryState::Undelivered,
        "failed" => DeliveryState::Failed,
        _ => DeliveryState::Sent,
    };
    Some(StatusReport {
        provider: PROVIDER,
        provider_id: get("MessageSid").or_else(|| get("SmsSid"))?,
        state,
        error_code: get("ErrorCode").filter(|c| !c.is_empty()),
    })
}

#[cfg(test)]
mod tests;
