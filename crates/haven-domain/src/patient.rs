//! The minimal patient record messaging needs: MRN, name, date of birth, phone, preferred
//! language and time zone. Validation only; the IANA zone is resolved by the layers above.

use jiff::civil::Date;

use crate::ValidationError;

/// A patient's demographics as entered (all PHI: sealed at rest by the layers below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientDetails {
    /// Medical record number, unique within the organisation.
    pub mrn: String,
    /// Full name.
    pub name: String,
    /// Date of birth.
    pub date_of_birth: Date,
    /// Mobile number in E.164 form (`+` and 8–15 digits), if known.
    pub phone: Option<String>,
    /// Preferred language, a BCP 47 primary tag such as `en` or `es`.
    pub language: String,
    /// IANA time zone, e.g. `America/New_York`, if known.
    pub time_zone: Option<String>,
    /// Where the patient lives, as an ISO 3166-2 subdivision such as `US-FL`, if known: some
    /// states allow texts in fewer hours.
    pub region: Option<String>,
}

/// Normalises and checks patient details; `today` bounds the date of birth.
pub fn check_patient(mut p: PatientDetails, today: Date) -> Result<PatientDetails, ValidationError> {
    p.mrn = p.mrn.trim().to_owned();
    if p.mrn.is_empty() || p.mrn.len() > 64 || !p.mrn.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ValidationError::new(
            "mrn",
            "invalid_mrn",
            "an MRN has 1 to 64 letters, digits or dashes",
        ));
    }
    p.name = crate::validation::check_name("name", &p.name, 200)?;
    if p.date_of_birth > today || p.date_of_birth.year() < 1880 {
        return Err(ValidationError::new(
            "date_of_birth",
            "invalid_date_of_birth",
            "the date of birth is not plausible",
        ));
    }
    if let Some(phone) = &p.phone {
        let compact: String = phone.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
        let digits = compact.strip_prefix('+').unwrap_or("");
        if !(8..=15).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(ValidationError::new(
                "phone",
                "invalid_phone",
                "a phone number is + and 8 to 15 digits (E.164)",
            ));
        }
        p.phone = Some(compact);
    }
    p.language = p.language.trim().to_ascii_lowercase();
    if !(2..=3).contains(&p.language.len()) || !p.language.chars().all(|c| c.is_ascii_lowercase()) {
        return Err(ValidationError::new(
            "language",
            "invalid_language",
            "a language is a code such as en or es",
        ));
    }
    if let Some(tz) = &p.time_zone {
        let ok = !tz.is_empty()
            && tz.len() <= 64
            && tz.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
        if !ok {
            return Err(ValidationError::new(
                "time_zone",
                "invalid_time_zone",
                "a time zone is an IANA name such as America/Chicago",
            ));
        }
    }
    if let Some(r) = &p.region {
        let r = r.trim().to_ascii_uppercase();
        let ok = matches!(r.split_once('-'), Some((country, sub))
            if country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase())
                && (1..=3).contains(&sub.len()) && sub.chars().all(|c| c.is_ascii_alphanumeric()));
        if !ok {
            return Err(ValidationError::new(
                "region",
                "invalid_region",
                "a region is an ISO 3166-2 code such as US-FL",
            ));
        }
        p.region = Some(r);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PatientDetails {
        PatientDetails {
            mrn: " MRN-0042 ".into(),
            name: "Rosa Diaz".into(),
            date_of_birth: jiff::civil::date(1961, 4, 9),
            phone: Some("+1 (555) 010-2299".into()),
            language: "ES".into(),
            time_zone: Some("America/Chicago".into()),
            region: Some("us-il".into()),
        }
    }

    #[test]
    fn details_are_normalised() {
        let p = check_patient(base(), jiff::civil::date(2026, 11, 2)).unwrap();
        assert_eq!(p.mrn, "MRN-0042");
        assert_eq!(p.phone.as_deref(), Some("+15550102299"));
        assert_eq!(p.language, "es");
    }

    #[test]
    fn implausible_details_name_their_field() {
        let today = jiff::civil::date(2026, 11, 2);
        let cases: Vec<(PatientDetails, &str)> = vec![
            (PatientDetails { mrn: "".into(), ..base() }, "mrn"),
            (PatientDetails { date_of_birth: jiff::civil::date(2027, 1, 1), ..base() }, "date_of_birth"),
            (PatientDetails { phone: Some("555-0102".into()), ..base() }, "phone"),
            (PatientDetails { language: "english".into(), ..base() }, "language"),
            (PatientDetails { time_zone: Some("Mars Base".into()), ..base() }, "time_zone"),
            (PatientDetails { region: Some("Florida".into()), ..base() }, "region"),
        ];
        for (p, field) in cases {
            assert_eq!(check_patient(p, today).unwrap_err().field, field);
        }
    }
}
