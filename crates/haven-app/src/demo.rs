//! The demo organisation "Riverside Clinic": created on first start with `--demo`, through the
//! same use cases a real administrator and real users go through (create, sign in, enrol).

use haven_crypto::Secret;
use haven_crypto::totp::TotpSecret;
use haven_domain::password::{PasswordContext, check_password};
use haven_domain::roles::Role;

use crate::admin::CreateUser;
use crate::{Actor, App, AppError, AppResult, RequestMeta};

/// The demo organisation's name.
pub const DEMO_ORG: &str = "Riverside Clinic";

const ACCOUNTS: [(&str, &str, Role); 6] = [
    ("admin", "Alex Morgan", Role::OrgAdmin),
    ("dr.okafor", "Ngozi Okafor", Role::Clinician),
    ("dr.lindqvist", "Erik Lindqvist", Role::Clinician),
    ("nurse.patel", "Priya Patel", Role::Nurse),
    ("frontdesk.garcia", "Maria Garcia", Role::FrontDesk),
    ("compliance.chen", "Wei Chen", Role::ComplianceOfficer),
];

/// One demo account's credentials, printed once.
#[derive(Debug)]
pub struct DemoAccount {
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Generated password.
    pub password: Secret<String>,
    /// Base32 TOTP secret to add to an authenticator app.
    pub totp_secret: Secret<String>,
}

impl App {
    /// A random password: 16 characters from an alphabet without look-alikes, in groups of
    /// four (80 random bits).
    pub fn generate_password(&self) -> Secret<String> {
        const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789#";
        let bytes = self.random::<16>();
        let chars: Vec<char> = bytes.iter().map(|b| ALPHABET[(b % 32) as usize] as char).collect();
        let groups: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
        Secret::new(groups.join("-"))
    }
}

impl App {
    /// Demo patients registered at the front desk, who agreed to care texts and reminders there
    /// or in person (the exact wording is kept as evidence); one prefers Spanish. Fictitious
    /// numbers (555-01xx). The demo has no SMS gateway: an administrator sets one up.
    async fn seed_demo_patients(&self, p: &crate::Principal) -> AppResult<()> {
        use haven_domain::patient::PatientDetails;
        use haven_domain::sms::{ConsentSource, ConsentState, Purpose};
        let date =
            |s: &str| s.parse::<jiff::civil::Date>().map_err(|_| AppError::Internal("demo date".into()));
        let patients = [
            (
                "DEMO-1001",
                "Jordan Rivers",
                "1958-03-14",
                "+12025550143",
                "en",
                "America/New_York",
                "US-DC",
                ConsentSource::FrontDesk,
            ),
            (
                "DEMO-1002",
                "Lucía Fernández",
                "1990-11-02",
                "+13055550178",
                "es",
                "America/New_York",
                "US-FL",
                ConsentSource::InPerson,
            ),
        ];
        for (mrn, name, dob, phone, language, zone, region, source) in patients {
            let details = PatientDetails {
                mrn: mrn.into(),
                name: name.into(),
                date_of_birth: date(dob)?,
                phone: Some(phone.into()),
                language: language.into(),
                time_zone: Some(zone.into()),
                region: Some(region.into()),
            };
            let patient = self.create_patient(p, details).await?;
            let change = crate::texting::ConsentChange {
                purposes: vec![Purpose::Care, Purpose::AppointmentReminder],
                state: ConsentState::Granted,
                source,
                wording:
                    "May Riverside Clinic text you when a secure message or appointment reminder is waiting? \
                          Msg&data rates may apply. Reply HELP for help, STOP to opt out."
                        .into(),
            };
            self.record_consent(p, patient.id, change).await?;
        }
        Ok(())
    }

    /// Creates the demo organisation unless it exists. Returns the accounts' credentials when
    /// it was created now, `None` when it was already there.
    pub async fn seed_demo(&self) -> AppResult<Option<Vec<DemoAccount>>> {
        let operator = Actor::Operator;
        if self.orgs(&operator).await?.iter().any(|o| o.name == DEMO_ORG) {
            return Ok(None);
        }
        let org = self.create_org(&operator, DEMO_ORG).await?;
        let meta = RequestMeta::default();
        let mut out = Vec::new();
        for (username, display_name, role) in ACCOUNTS {
            let password = loop {
                let p = self.generate_password();
                let ctx = PasswordContext { username, display_name, mfa: true };
                if check_password(p.expose(), &ctx).is_ok() {
                    break p;
                }
            };
            let input = CreateUser {
                username: username.into(),
                display_name: display_name.into(),
                roles: vec![role],
                password: password.clone(),
            };
            self.create_user(&operator, org.id, input).await?;
            // Enrol exactly as a person would: sign in, start enrolment, confirm with a code.
            let issued = self.login(username, password.clone(), &meta).await?;
            let ctx = self.session(issued.token.expose(), &meta).await?;
            let enrolment = self.start_enrolment(&ctx).await?;
            let secret = data_encoding::BASE32_NOPAD
                .decode(enrolment.secret.expose().as_bytes())
                .map_err(|_| AppError::Internal("demo TOTP secret".into()))?;
            let secret = TotpSecret::from_bytes(secret);
            let code = secret.code_at(u64::try_from(self.now().as_second()).unwrap_or(0));
            let done = self.confirm_enrolment(&ctx, Secret::new(code)).await?;
            let active = self.session(done.session.token.expose(), &meta).await?;
            if role == Role::FrontDesk {
                let p = self.authenticate(done.session.token.expose(), &meta).await?;
                self.seed_demo_patients(&p).await?;
            }
            self.logout(&active).await?;
            out.push(DemoAccount {
                username: username.into(),
                display_name: display_name.into(),
                role,
                password,
                totp_secret: enrolment.secret,
            });
        }
        Ok(Some(out))
    }
}
