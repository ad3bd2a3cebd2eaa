//! The rules of patient texting that the system enforces, whatever staff do: what an inbound
//! text means (opt-out, help, opt-in keywords; free text that only looks like an opt-out), when
//! a non-urgent text may go out (quiet hours in the patient's local time, the strictest window
//! when the zone is unknown), how often (frequency caps per purpose), and which placeholders an
//! SMS template may hold (none that could carry PHI).
//!
//! Pure functions: time comes in as an argument, time zones as `jiff::tz::TimeZone` values.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::ValidationError;

/// What an inbound text asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// An opt-out keyword (STOP and its synonyms, in English and Spanish).
    OptOut,
    /// HELP or AYUDA.
    Help,
    /// START, UNSTOP or YES: opting back in.
    OptIn,
    /// Free text that mentions stopping ("please stop texting me"): not an opt-out by itself,
    /// but flagged for staff to act on.
    LooksLikeOptOut,
    /// Anything else: a reply.
    Message,
}

const OPT_OUT: &[&str] = &[
    "STOP",
    "QUIT",
    "END",
    "REVOKE",
    "OPT OUT",
    "CANCEL",
    "UNSUBSCRIBE",
    "STOPALL",
    "OPTOUT",
    "ALTO",
    "PARAR",
];
const HELP: &[&str] = &["HELP", "AYUDA"];
const OPT_IN: &[&str] = &["START", "UNSTOP", "YES"];
/// Words that, inside longer text, suggest the patient wants no more texts.
const STOP_WORDS: &[&str] = &[
    "STOP",
    "QUIT",
    "UNSUBSCRIBE",
    "OPTOUT",
    "OPT-OUT",
    "REMOVE",
    "CANCEL",
    "ALTO",
    "PARAR",
    "PARE",
    "BASTA",
];

/// The keyword form of a text: surrounding spaces and punctuation dropped, inner runs of spaces
/// made one, upper case.
fn keyword_form(body: &str) -> String {
    let trimmed =
        body.trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation() || "¡¿".contains(c));
    trimmed.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase()
}

/// Classifies an inbound text. Keywords are matched on the whole text, case-insensitively,
/// ignoring surrounding spaces and punctuation ("Stop.", " stop! ", "Opt out").
pub fn classify(body: &str) -> Inbound {
    let k = keyword_form(body);
    if OPT_OUT.contains(&k.as_str()) {
        return Inbound::OptOut;
    }
    if HELP.contains(&k.as_str()) {
        return Inbound::Help;
    }
    if OPT_IN.contains(&k.as_str()) {
        return Inbound::OptIn;
    }
    let mentions_stopping =
        k.split(|c: char| !c.is_alphanumeric() && c != '-').any(|w| STOP_WORDS.contains(&w));
    if mentions_stopping { Inbound::LooksLikeOptOut } else { Inbound::Message }
}

/// The local hours in which non-urgent texts may be sent: from `start` (inclusive) to `end`
/// (exclusive), the same every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendingWindow {
    /// First allowed local time.
    pub start: Time,
    /// First local time no longer allowed.
    pub end: Time,
}

impl Default for SendingWindow {
    /// 08:00 to 21:00.
    fn default() -> Self {
        Self { start: Time::constant(8, 0, 0, 0), end: Time::constant(21, 0, 0, 0) }
    }
}

impl SendingWindow {
    /// A window; `start` must come before `end` (no window across midnight).
    pub fn new(start: Time, end: Time) -> Result<Self, ValidationError> {
        if start >= end {
            return Err(ValidationError::new(
                "sending_window",
                "invalid_window",
                "the window must start before it ends, within one day",
            ));
        }
        Ok(Self { start, end })
    }

    /// The part of this window that `other` allows too (a stricter rule narrows, never widens);
    /// `None` if they do not overlap.
    pub fn narrowed(&self, other: &SendingWindow) -> Option<SendingWindow> {
        let (start, end) = (self.start.max(other.start), self.end.min(other.end));
        (start < end).then_some(SendingWindow { start, end })
    }

    /// Whether `at` falls inside the window in `zone`.
    pub fn allows(&self, at: Timestamp, zone: &TimeZone) -> bool {
        let t = at.to_zoned(zone.clone()).time();
        t >= self.start && t < self.end
    }

    /// The first instant at or after `at` inside the window in `zone`. Daylight-saving changes
    /// are handled by the zone: the window opens at `start` local time on each local date.
    pub fn next_open(&self, at: Timestamp, zone: &TimeZone) -> Timestamp {
        if self.allows(at, zone) {
            return at;
        }
        let local = at.to_zoned(zone.clone());
        let mut date = local.date();
        if local.time() >= self.end {
            date = date.tomorrow().unwrap_or(date);
        }
        // A start time skipped by a daylight-saving gap resolves to the first instant after it.
        date.to_datetime(self.start).to_zoned(zone.clone()).map(|z| z.timestamp()).unwrap_or(at)
    }
}

/// Where a patient's local time is not known, a text may go out only when it is inside the
/// window in every zone the organisation serves (the strictest window).
pub fn next_open_everywhere(window: &SendingWindow, at: Timestamp, zones: &[TimeZone]) -> Timestamp {
    let mut t = at;
    // Each pass moves to the next opening of a zone that is closed; a few passes suffice for
    // any set of zones whose windows overlap, and a week bounds the search otherwise.
    for _ in 0..(zones.len() * 8).max(1) {
        let closed = zones.iter().find(|z| !window.allows(t, z));
        match closed {
            None => return t,
            Some(z) => {
                let next = window.next_open(t, z);
                // Closed now and opening no later than now: step past the closing instead.
                t = if next > t { next } else { t + SignedDuration::from_mins(1) };
            }
        }
    }
    t
}

/// A frequency cap: at most `max` texts of one purpose to one number within any `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    /// Texts allowed.
    pub max: u32,
    /// The rolling period.
    pub within: SignedDuration,
}

/// The default caps per purpose: one a day and three a week.
pub fn default_caps() -> [FrequencyCap; 2] {
    [
        FrequencyCap { max: 1, within: SignedDuration::from_hours(24) },
        FrequencyCap { max: 3, within: SignedDuration::from_hours(24 * 7) },
    ]
}

/// How far ahead a text may be scheduled.
pub const MAX_SCHEDULE_AHEAD: SignedDuration = SignedDuration::from_hours(24 * 30);

/// When staff asked a text to go out (`send_at`, RFC 3339): `None` for now. A time already past
/// means now (a client's clock a little behind must not be refused); more than
/// [`MAX_SCHEDULE_AHEAD`] ahead is refused, as is anything that is not a time.
pub fn scheduled(send_at: Option<&str>, now: Timestamp) -> Result<Option<Timestamp>, ValidationError> {
    let Some(raw) = send_at else { return Ok(None) };
    let at: Timestamp = raw.parse().map_err(|_| {
        ValidationError::new(
            "send_at",
            "invalid_send_at",
            "send_at must be an RFC 3339 time such as 2026-12-05T14:00:00Z",
        )
    })?;
    if at > now + MAX_SCHEDULE_AHEAD {
        return Err(ValidationError::new(
            "send_at",
            "invalid_send_at",
            "send_at may be at most 30 days ahead",
        ));
    }
    Ok((at > now).then_some(at))
}

/// The first instant at or after `now` when one more text fits every cap, given when earlier
/// texts of the same purpose to the same number were sent.
pub fn next_within_caps(sent: &[Timestamp], now: Timestamp, caps: &[FrequencyCap]) -> Timestamp {
    let mut sorted: Vec<Timestamp> = sent.to_vec();
    sorted.sort_unstable();
    let mut t = now;
    for cap in caps {
        if cap.max == 0 {
            continue;
        }
        // Inside (t - within, t] there must be fewer than `max` texts; if not, wait until the
        // oldest of the newest `max` texts leaves the period.
        let recent: Vec<&Timestamp> = sorted.iter().filter(|s| **s > t - cap.within).collect();
        if recent.len() >= cap.max as usize {
            let oldest_that_must_expire = recent[recent.len() - cap.max as usize];
            t = t.max(*oldest_that_must_expire + cap.within);
        }
    }
    t
}

/// The placeholders an SMS template may use: none of them can carry PHI.
pub const TEMPLATE_PLACEHOLDERS: &[&str] = &["org_name", "link", "help_phone"];

/// Checks an SMS template on save: only the allowed placeholders (`{{ link }}` is required, so
/// the text says where to read), well-formed braces, and at most 320 characters.
pub fn check_template(text: &str) -> Result<(), ValidationError> {
    let bad = |code: &'static str, msg: &str| Err(ValidationError::new("template", code, msg));
    if text.chars().count() > 320 {
        return bad("template_too_long", "an SMS template is at most 320 characters");
    }
    let mut rest = text;
    let mut has_link = false;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return bad("invalid_template", "a placeholder is not closed with }}");
        };
        let name = after[..close].trim();
        if !TEMPLATE_PLACEHOLDERS.contains(&name) {
            return bad(
                "phi_placeholder",
                "only {{ org_name }}, {{ link }} and {{ help_phone }} may be used: an SMS must carry no PHI",
            );
        }
        has_link |= name == "link";
        rest = &after[close + 2..];
    }
    if rest.contains("}}") || text.matches("}}").count() != text.matches("{{").count() {
        return bad("invalid_template", "unbalanced braces");
    }
    if !has_link {
        return bad("missing_link", "the template must contain {{ link }}");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
