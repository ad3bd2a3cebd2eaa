//! Password rules after NIST SP 800-63B-4 §3.1.1.2: length, not composition. A password is
//! refused when it is too short or too long, appears on the bundled list of common and breached
//! passwords, contains the user's own name or the service name, or is one character repeated or
//! a plain sequence. Nothing else is demanded: no character classes, no forced rotation.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::ValidationError;

/// Minimum length when the account also has a second factor (NIST: 8).
pub const MIN_LEN_WITH_MFA: usize = 8;
/// Minimum length when the password is the only factor (NIST: 15).
pub const MIN_LEN_ALONE: usize = 15;
/// Maximum accepted length (NIST: at least 64 must be accepted).
pub const MAX_LEN: usize = 256;

/// The common/breached list (entries of 8+ characters from zxcvbn's password list; licence in
/// `data/COMMON-PASSWORDS-LICENSE.txt`). Compared case-insensitively.
static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt").lines().filter(|l| !l.is_empty()).collect()
});

/// Words that must not appear in a password, besides the user's own names.
const SERVICE_WORDS: [&str; 1] = ["haven"];

/// What a password is checked against besides the list: the user's own names.
#[derive(Debug, Default)]
pub struct PasswordContext<'a> {
    /// The user's login name.
    pub username: &'a str,
    /// The user's display name (each word of three or more letters is checked).
    pub display_name: &'a str,
    /// Whether the account will have a second factor (relaxes the minimum length).
    pub mfa: bool,
}

/// Checks a candidate password. Messages never repeat the password.
pub fn check_password(password: &str, ctx: &PasswordContext<'_>) -> Result<(), ValidationError> {
    let len = password.chars().count();
    let min = if ctx.mfa { MIN_LEN_WITH_MFA } else { MIN_LEN_ALONE };
    if len < min {
        return Err(reject(
            "password_too_short",
            format!("the password must be at least {min} characters long"),
        ));
    }
    if len > MAX_LEN {
        return Err(reject(
            "password_too_long",
            format!("the password must be at most {MAX_LEN} characters long"),
        ));
    }
    let lower = password.to_lowercase();
    if COMMON.contains(lower.as_str()) {
        return Err(reject(
            "password_common",
            "this password is on a list of common or breached passwords; choose another",
        ));
    }
    let mut words: Vec<String> = SERVICE_WORDS.iter().map(|w| (*w).to_owned()).collect();
    let username = ctx.username.to_lowercase();
    if username.chars().count() >= 3 {
        words.push(username.clone());
    }
    // Parts of the username and display name ("dr.okafor", "Ngozi Okafor") count too.
    for part in username
        .split(|c: char| !c.is_alphanumeric())
        .chain(ctx.display_name.split(|c: char| !c.is_alphanumeric()))
    {
        if part.chars().count() >= 3 {
            words.push(part.to_lowercase());
        }
    }
    if words.iter().any(|w| lower.contains(w.as_str())) {
        return Err(reject(
            "password_contains_name",
            "the password must not contain your name, your username or the service name",
        ));
    }
    if is_repetitive_or_sequential(&lower) {
        return Err(reject(
            "password_trivial",
            "the password must not be one character repeated or a simple sequence",
        ));
    }
    Ok(())
}

fn reject(code: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError::new("password", code, message)
}

/// True for "aaaaaaaa", "abababab", "12345678…", "zyxwvuts…": strings with one or two distinct
/// characters, or whose characters step by a constant +1 or -1.
fn is_repetitive_or_sequential(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= 2 {
        return true;
    }
    let steps: Vec<i64> = chars.windows(2).map(|w| w[1] as i64 - w[0] as i64).collect();
    steps.iter().all(|&d| d == 1) || steps.iter().all(|&d| d == -1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PasswordContext<'static> {
        PasswordContext { username: "dr.okafor", display_name: "Ngozi Okafor", mfa: true }
    }

    #[test]
    fn length_depends_on_mfa() {
        assert_eq!(check_password("k7#qv9z", &ctx()).unwrap_err().code, "password_too_short");
        assert!(check_password("k7#qv9zt", &ctx()).is_ok());
        let alone = PasswordContext { mfa: false, ..ctx() };
        assert_eq!(check_password("k7#qv9ztw2m", &alone).unwrap_err().code, "password_too_short");
        assert!(check_password("k7#qv9ztw2mplk4x", &alone).is_ok());
    }

    #[test]
    fn long_passphrases_are_accepted_up_to_the_limit() {
        let p64 = "correct horse battery staple and a little more text to reach 64!";
        assert!(p64.chars().count() >= 64);
        assert!(check_password(p64, &ctx()).is_ok());
        let long: String = "xq7".repeat(100);
        assert_eq!(check_password(&long, &ctx()).unwrap_err().code, "password_too_long");
    }

    #[test]
    fn common_passwords_are_refused_case_insensitively() {
        assert_eq!(check_password("password", &ctx()).unwrap_err().code, "password_common");
        assert_eq!(check_password("PassWord1", &ctx()).unwrap_err().code, "password_common");
        assert_eq!(check_password("iloveyou", &ctx()).unwrap_err().code, "password_common");
    }

    #[test]
    fn own_name_and_service_name_are_refused() {
        for p in ["okafor-is-great", "xxHAVENxx99", "my ngozi pass", "dr.okafor2026"] {
            assert_eq!(check_password(p, &ctx()).unwrap_err().code, "password_contains_name", "{p}");
        }
    }

    #[test]
    fn trivial_strings_are_refused() {
        for p in ["zzzzzzzzzz", "abababababab", "3456789:;<", "hgfedcba"] {
            assert_eq!(check_password(p, &ctx()).unwrap_err().code, "password_trivial", "{p}");
        }
    }

    #[test]
    fn no_composition_rules() {
        // Lowercase letters and spaces only: fine.
        assert!(check_password("purple monkey dishwasher", &ctx()).is_ok());
    }
}
