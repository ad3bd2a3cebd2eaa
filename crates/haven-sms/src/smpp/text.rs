//! The text side of SMPP, with no IO: choosing a data_coding for an outbound body, decoding
//! the bodies SMSCs deliver, reading delivery receipts, and naming mobile-originated texts.

use sha1::{Digest, Sha1};

use crate::DeliveryState;

/// data_coding 0: the SMSC's default alphabet (GSM 03.38 on nearly every SMSC).
pub(crate) const SMSC_DEFAULT: u8 = 0x00;
/// data_coding 8: UCS-2, sent as UTF-16BE.
pub(crate) const UCS2: u8 = 0x08;

/// GSM 03.38's default alphabet, by septet value (0x1B is the escape to the extension table).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                         ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// GSM 03.38's extension table: the septet after an escape, and the character it stands for.
const GSM_EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0c}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// An outbound body, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// The data_coding to declare.
    pub data_coding: u8,
    /// The octets.
    pub octets: Vec<u8>,
}

impl Encoded {
    /// Whether the body fits one SMS, so it can travel in short_message. Anything longer goes
    /// in the message_payload TLV and the SMSC splits it: short_message could hold up to 254
    /// octets, but SMSCs differ on whether they split an over-long short_message, truncate it
    /// or refuse it, while message_payload is defined to be split by the SMSC.
    pub fn fits_one_sms(&self) -> bool {
        match self.data_coding {
            SMSC_DEFAULT => self.octets.len() <= 160,
            _ => self.octets.len() <= 140,
        }
    }
}

/// Characters whose GSM 03.38 septet equals their ASCII code. Outside this set, SMSCs
/// disagree on what data_coding 0 means (GSM 03.38, ASCII or Latin-1 all occur in the wild:
/// `@`, `$` and `_` are where they differ), so a body using anything else goes as UCS-2,
/// which every SMSC reads the same way, at the price of 70 rather than 160 characters a part.
fn same_in_gsm_and_ascii(c: char) -> bool {
    matches!(c, '\n' | '\r' | ' '..='#' | '%'..='?' | 'A'..='Z' | 'a'..='z')
}

/// Encodes a body: plain ASCII (see [`same_in_gsm_and_ascii`]) as the SMSC default alphabet,
/// one octet a character; anything else, Spanish accents included, as UCS-2.
pub(crate) fn encode(body: &str) -> Encoded {
    if body.chars().all(same_in_gsm_and_ascii) {
        Encoded { data_coding: SMSC_DEFAULT, octets: body.as_bytes().to_vec() }
    } else {
        Encoded { data_coding: UCS2, octets: body.encode_utf16().flat_map(u16::to_be_bytes).collect() }
    }
}

/// Decodes a delivered body by its data_coding. A user data header (`udhi`: a part of a
/// concatenated text) is skipped, so each part reads as text; parts are not reassembled.
pub(crate) fn decode(data_coding: u8, udhi: bool, octets: &[u8]) -> String {
    let octets = if udhi {
        let header = usize::from(octets.first().copied().unwrap_or(0)) + 1;
        octets.get(header..).unwrap_or_default()
    } else {
        octets
    };
    match data_coding {
        // GSM's "general data coding" group: bits 2-3 give the alphabet.
        0x00..=0x0F => decode_simple(data_coding, octets),
        0x10..=0x3F if data_coding & 0x0C == 0x08 => utf16be(octets),
        0x10..=0x3F if data_coding & 0x0C == 0x00 => default_alphabet(octets),
        // Message class groups: bit 2 set means 8-bit data, else the default alphabet.
        0xF0..=0xFF if data_coding & 0x04 == 0 => default_alphabet(octets),
        _ => latin1(octets),
    }
}

fn decode_simple(data_coding: u8, octets: &[u8]) -> String {
    match data_coding {
        SMSC_DEFAULT => default_alphabet(octets),
        UCS2 => utf16be(octets),
        // IA5 (ASCII) is a subset of Latin-1; other 8-bit codings are kept legible, not exact.
        _ => latin1(octets),
    }
}

/// data_coding 0 as delivered: unpacked GSM 03.38 septets when every octet is one (the usual
/// case), otherwise the SMSC meant an 8-bit character set: UTF-8 if valid, else Latin-1.
fn default_alphabet(octets: &[u8]) -> String {
    if octets.iter().all(|&b| b < 0x80) {
        return gsm(octets);
    }
    match std::str::from_utf8(octets) {
        Ok(s) => s.to_owned(),
        Err(_) => latin1(octets),
    }
}

fn gsm(septets: &[u8]) -> String {
    let basic: Vec<char> = GSM_BASIC.chars().collect();
    let mut out = String::with_capacity(septets.len());
    let mut escaped = false;
    for &s in septets {
        if escaped {
            escaped = false;
            // An escape before a septet with no extension falls back to the basic character.
            match GSM_EXTENSION.iter().find(|(k, _)| *k == s) {
                Some((_, c)) => out.push(*c),
                None => out.push(basic[usize::from(s & 0x7F)]),
            }
        } else if s == 0x1B {
            escaped = true;
        } else {
            out.push(basic[usize::from(s & 0x7F)]);
        }
    }
    out
}

fn latin1(octets: &[u8]) -> String {
    octets.iter().map(|&b| char::from(b)).collect()
}

fn utf16be(octets: &[u8]) -> String {
    let units = octets.chunks(2).map(|p| u16::from_be_bytes([p[0], p.get(1).copied().unwrap_or(0)]));
    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
}

/// What a delivery receipt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receipt {
    /// The SMSC's message id, as its submit_sm_resp gave it.
    pub message_id: String,
    /// Where the text got to.
    pub state: DeliveryState,
    /// The SMSC's error code, when it reports one other than zero.
    pub error_code: Option<String>,
}

/// Reads the receipt text SMPP 3.4's appendix B suggests and SMSCs send:
/// `id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:…`.
/// `None` without an id or a stat.
pub(crate) fn parse_receipt(text: &str) -> Option<Receipt> {
    let message_id = receipt_field(text, "id:")?;
    let state = stat_state(&receipt_field(text, "stat:")?);
    let error_code = receipt_field(text, "err:").filter(|e| e.bytes().any(|b| b != b'0'));
    Some(Receipt { message_id, state, error_code })
}

/// The value after `key` (matched case-insensitively at the start or after a space), up to
/// the next space.
fn receipt_field(text: &str, key: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(key).map(|i| i + from) {
        if at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace() {
            let rest = &text[at + key.len()..];
            let value: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            return (!value.is_empty()).then_some(value);
        }
        from = at + key.len();
    }
    None
}

/// A receipt's `stat:` word as a state. Unknown words mean the text is still on its way.
pub(crate) fn stat_state(stat: &str) -> DeliveryState {
    match stat.to_ascii_uppercase().as_str() {
        "DELIVRD" => DeliveryState::Delivered,
        "UNDELIV" | "EXPIRED" | "REJECTD" | "DELETED" => DeliveryState::Undelivered,
        _ => DeliveryState::Sent,
    }
}

/// The message_state TLV (SMPP 3.4 §5.2.28) as a state.
pub(crate) fn message_state(value: u8) -> DeliveryState {
    match value {
        2 => DeliveryState::Delivered,
        3..=5 | 8 => DeliveryState::Undelivered,
        _ => DeliveryState::Sent,
    }
}

/// What identifies a mobile-originated text across the SMSC's retries of the same deliver_sm.
pub(crate) struct MoKey<'a> {
    pub source_addr: &'a str,
    pub destination_addr: &'a str,
    pub data_coding: u8,
    /// short_message, or message_payload when short_message is empty.
    pub octets: &'a [u8],
    pub schedule_delivery_time: &'a str,
    pub user_message_reference: Option<u16>,
    /// The UTC day the text arrived.
    pub day: jiff::civil::Date,
}

/// A provider id for a mobile-originated text. SMPP 3.4 gives an MO text no id, and an SMSC
/// that saw no deliver_sm_resp delivers the same text again, so the id is derived from the
/// text itself: hex SHA-1 over the addresses, the undecoded body and what little else the PDU
/// carries. The undecoded octets keep ids stable if decoding ever changes.
///
/// Trade-off: two identical texts from one phone to one number on the same UTC day get the
/// same id, and the second is dropped as a duplicate; a retry that straddles midnight UTC is
/// taken as a new text. Without the day, a patient's second "YES" would be dropped forever.
pub(crate) fn mo_id(key: &MoKey<'_>) -> String {
    let mut h = Sha1::new();
    for part in [
        key.source_addr.as_bytes(),
        key.destination_addr.as_bytes(),
        &[key.data_coding],
        key.octets,
        key.schedule_delivery_time.as_bytes(),
        &key.user_message_reference.map_or([0xFF; 3], |r| {
            let [a, b] = r.to_be_bytes();
            [0, a, b]
        }),
        key.day.to_string().as_bytes(),
    ] {
        // Length-prefixed, so no two different keys hash the same bytes.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    data_encoding::HEXLOWER.encode(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gsm_table_has_one_character_per_septet() {
        assert_eq!(GSM_BASIC.chars().count(), 128);
        assert_eq!(GSM_BASIC.chars().nth(0x1B), Some('\u{1b}'));
        assert_eq!(GSM_BASIC.chars().nth(0x41), Some('A'));
    }

    #[test]
    fn plain_ascii_goes_as_the_default_alphabet_and_the_rest_as_ucs2() {
        let e = encode("Your code is 123456. Reply STOP to opt out.");
        assert_eq!(e.data_coding, SMSC_DEFAULT);
        assert_eq!(e.octets, b"Your code is 123456. Reply STOP to opt out.");
        for body in ["¿Mañana a las 9?", "email me @ home", "costs $5", "a_b", "€"] {
            let e = encode(body);
            assert_eq!(e.data_coding, UCS2, "{body}");
            assert_eq!(decode(e.data_coding, false, &e.octets), body);
        }
        assert_eq!(encode("ñ").octets, [0x00, 0xF1]);
        assert_eq!(encode("😀").octets.len(), 4, "outside the BMP: a UTF-16 surrogate pair");
    }

    #[test]
    fn one_sms_holds_160_default_or_70_ucs2_characters() {
        assert!(encode(&"a".repeat(160)).fits_one_sms());
        assert!(!encode(&"a".repeat(161)).fits_one_sms());
        assert!(encode(&"é".repeat(70)).fits_one_sms());
        assert!(!encode(&"é".repeat(71)).fits_one_sms());
    }

    #[test]
    fn delivered_bodies_are_decoded_by_data_coding() {
        assert_eq!(decode(0, false, &[0x00, 0x02, 0x11, 0x1B, 0x65, 0x5D, 0x60]), "@$_€Ñ¿");
        assert_eq!(decode(0, false, "Sí".as_bytes()), "Sí", "8-bit default alphabet: UTF-8");
        assert_eq!(decode(0, false, &[b'S', 0xED]), "Sí", "8-bit default alphabet: Latin-1");
        assert_eq!(decode(3, false, &[b'S', 0xED]), "Sí");
        assert_eq!(decode(1, false, b"OK"), "OK");
        assert_eq!(decode(8, false, &[0x00, b'S', 0x00, 0xED]), "Sí");
        assert_eq!(decode(0x18, false, &[0x00, b'S']), "S", "GSM coding group, UCS-2 alphabet");
        assert_eq!(decode(0xF1, false, b"hi"), "hi", "message class 1, default alphabet");
        let udh = [0x05, 0x00, 0x03, 0x2A, 0x02, 0x01];
        assert_eq!(decode(0, true, &[&udh[..], b"part one"].concat()), "part one");
        assert_eq!(decode(0, true, &[0x09]), "", "a header longer than the body is not a panic");
    }

    #[test]
    fn receipts_are_read_from_their_text() {
        let r = parse_receipt(
            "id:0123456789 sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 stat:DELIVRD err:000 text:Hi",
        )
        .unwrap();
        assert_eq!(
            r,
            Receipt { message_id: "0123456789".into(), state: DeliveryState::Delivered, error_code: None }
        );
        let r = parse_receipt("id:ab-12 sub:001 dlvrd:000 stat:UNDELIV err:0b1 Text:x").unwrap();
        assert_eq!((r.state, r.error_code.as_deref()), (DeliveryState::Undelivered, Some("0b1")));
        assert_eq!(parse_receipt("ID:7 STAT:expired").unwrap().state, DeliveryState::Undelivered);
        assert_eq!(parse_receipt("id:7 stat:ENROUTE").unwrap().state, DeliveryState::Sent);
        assert_eq!(parse_receipt("id:7 stat:ACCEPTD").unwrap().state, DeliveryState::Sent);
        assert_eq!(parse_receipt("id:7 stat:UNKNOWN").unwrap().state, DeliveryState::Sent);
        assert_eq!(parse_receipt("id:7 stat:REJECTD").unwrap().state, DeliveryState::Undelivered);
        assert_eq!(parse_receipt("id:7 stat:DELETED").unwrap().state, DeliveryState::Undelivered);
        assert!(parse_receipt("stat:DELIVRD").is_none(), "no id");
        assert!(parse_receipt("id:7 sub:001").is_none(), "no stat");
        assert!(parse_receipt("paid:7 stat:DELIVRD").is_none(), "`id:` inside another key");
    }

    #[test]
    fn the_message_state_tlv_maps_like_the_stat_words() {
        assert_eq!(message_state(2), DeliveryState::Delivered);
        for s in [3, 4, 5, 8] {
            assert_eq!(message_state(s), DeliveryState::Undelivered);
        }
        for s in [0, 1, 6, 7, 9] {
            assert_eq!(message_state(s), DeliveryState::Sent);
        }
    }

    #[test]
    fn mo_ids_are_stable_and_change_with_any_part_of_the_text() {
        let day = jiff::civil::date(2025, 1, 1);
        let key = |body: &'static [u8], from: &'static str, day| MoKey {
            source_addr: from,
            destination_addr: "15550001111",
            data_coding: 0,
            octets: body,
            schedule_delivery_time: "",
            user_message_reference: None,
            day,
        };
        let id = mo_id(&key(b"YES", "15552223333", day));
        assert_eq!(id.len(), 40);
        assert_eq!(id, mo_id(&key(b"YES", "15552223333", day)));
        assert_ne!(id, mo_id(&key(b"NO", "15552223333", day)));
        assert_ne!(id, mo_id(&key(b"YES", "15552223334", day)));
        assert_ne!(id, mo_id(&key(b"YES", "15552223333", day.tomorrow().unwrap())));
        assert_ne!(mo_id(&key(b"", "1555222333", day)), mo_id(&key(b"3", "155522233", day)));
    }
}
