//! TOTP (RFC 6238): SHA-1, 6 digits, 30-second steps, as every authenticator app expects.
//! Verification accepts the current step and one on either side, and refuses any step at or
//! before the last one accepted, so an intercepted code cannot be replayed.

use data_encoding::BASE32_NOPAD;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::{CryptoError, Secret};

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;

/// A TOTP shared secret (160 bits, as RFC 4226 recommends).
#[derive(Debug, Clone)]
pub struct TotpSecret(Secret<Vec<u8>>);

impl TotpSecret {
    /// Wraps 20 random bytes.
    pub fn from_random(bytes: [u8; 20]) -> Self {
        Self(Secret::new(bytes.to_vec()))
    }

    /// Wraps stored bytes (after unsealing).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Secret::new(bytes))
    }

    /// The raw bytes (for sealing before storage).
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.expose()
    }

    /// The base32 form people type into an authenticator app.
    pub fn base32(&self) -> Secret<String> {
        Secret::new(BASE32_NOPAD.encode(self.0.expose()))
    }

    fn totp(&self) -> TOTP {
        TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 1, STEP_SECONDS, self.0.expose().clone())
    }

    /// The code for a given step (used by tests and the demo's own sign-in helpers).
    pub fn code_at(&self, unix_seconds: u64) -> String {
        self.totp().generate(unix_seconds)
    }

    /// Checks `code` at `unix_seconds`. Returns the accepted step, which must be stored and
    /// passed back as `last_used_step` next time; `None` when the code is wrong or replayed.
    pub fn verify(&self, code: &str, unix_seconds: u64, last_used_step: Option<u64>) -> Option<u64> {
        let code = code.trim();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now_step = unix_seconds / STEP_SECONDS;
        let totp = self.totp();
        let mut accepted = None;
        // Check every candidate step, so timing does not tell which one matched.
        for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
            let expected = totp.generate(step * STEP_SECONDS);
            let matches: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
            let fresh = last_used_step.is_none_or(|last| step > last);
            if matches && fresh && accepted.is_none() {
                accepted = Some(step);
            }
        }
        accepted
    }

    /// The `otpauth://` URI that authenticator apps scan.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            percent_encode(issuer),
            percent_encode(account),
            self.base32().expose(),
            percent_encode(issuer),
        )
    }
}

/// Renders `data` as a QR code in SVG.
pub fn qr_svg(data: &str) -> Result<String, CryptoError> {
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(|_| CryptoError::Qr)?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).quiet_zone(true).build())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B test secret (SHA-1): ASCII "12345678901234567890".
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec())
    }

    #[test]
    fn rfc6238_known_answers() {
        // Appendix B lists 8-digit codes; the 6-digit codes are their last six digits.
        let s = rfc_secret();
        assert_eq!(s.code_at(59), "287082");
        assert_eq!(s.code_at(1_111_111_109), "081804");
        assert_eq!(s.code_at(1_234_567_890), "005924");
        assert_eq!(s.code_at(2_000_000_000), "279037");
    }

    #[test]
    fn accepts_one_step_either_side_and_no_more() {
        let s = rfc_secret();
        let t = 1_234_567_890;
        let code = s.code_at(t);
        assert!(s.verify(&code, t, None).is_some());
        assert!(s.verify(&code, t + 30, None).is_some());
        assert!(s.verify(&code, t - 30, None).is_some());
        assert!(s.verify(&code, t + 60, None).is_none());
        assert!(s.verify(&code, t - 60, None).is_none());
    }

    #[test]
    fn a_used_code_cannot_be_replayed() {
        let s = rfc_secret();
        let t = 1_234_567_890;
        let step = s.verify(&s.code_at(t), t, None).unwrap();
        assert!(s.verify(&s.code_at(t), t, Some(step)).is_none());
        // Nor may an older code be used after a newer one.
        assert!(s.verify(&s.code_at(t - 30), t, Some(step)).is_none());
        assert!(s.verify(&s.code_at(t + 30), t + 30, Some(step)).is_some());
    }

    #[test]
    fn malformed_codes_are_refused() {
        let s = rfc_secret();
        for c in ["", "12345", "1234567", "abcdef", "12 345"] {
            assert!(s.verify(c, 59, None).is_none(), "{c}");
        }
    }

    #[test]
    fn uri_and_qr() {
        let s = rfc_secret();
        let uri = s.otpauth_uri("Haven (Riverside Clinic)", "dr.okafor");
        assert!(uri.starts_with("otpauth://totp/Haven%20%28Riverside%20Clinic%29:dr.okafor?secret="));
        assert!(uri.contains("&period=30"));
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg"));
    }
}
