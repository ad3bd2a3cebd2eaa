//! Conversions between domain values and column values. Stored data is never trusted blindly:
//! anything that does not parse is reported as [`StoreError::Corrupt`].

use haven_domain::org::{AttachmentKinds, OrgPolicy, Organization};
use haven_domain::roles::RoleSet;
use haven_domain::user::{User, UserStatus};
use jiff::Timestamp;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{StoreError, StoreResult};

/// Milliseconds since the epoch, as stored.
pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub(crate) fn ts(ms: i64) -> StoreResult<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|_| StoreError::Corrupt("timestamp"))
}

pub(crate) fn id<T: std::str::FromStr>(s: &str) -> StoreResult<T> {
    s.parse().map_err(|_| StoreError::Corrupt("id"))
}

pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, col: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(StoreError::from)
}

pub(crate) const USER_COLUMNS: &str =
    "id, org_id, username, display_name, roles, status, totp_sealed IS NOT NULL AS mfa, created_at";

pub(crate) fn user(row: &AnyRow) -> StoreResult<User> {
    let roles: String = get(row, "roles")?;
    let status: String = get(row, "status")?;
    let mfa: i64 = match row.try_get::<bool, _>("mfa") {
        Ok(b) => i64::from(b),
        Err(_) => get(row, "mfa")?,
    };
    Ok(User {
        id: id(&get::<String>(row, "id")?)?,
        org_id: id(&get::<String>(row, "org_id")?)?,
        username: get(row, "username")?,
        display_name: get(row, "display_name")?,
        roles: RoleSet::from_storage(&roles).ok_or(StoreError::Corrupt("roles"))?,
        status: UserStatus::parse(&status).ok_or(StoreError::Corrupt("status"))?,
        mfa_enrolled: mfa != 0,
        created_at: ts(get(row, "created_at")?)?,
    })
}

pub(crate) const ORG_COLUMNS: &str = "id, name, mfa_required, inactivity_timeout_seconds, \
    session_lifetime_seconds, max_attachment_bytes, attachment_kinds, created_at";

/// The policy columns of `organizations o`, for queries that join a user's organisation.
pub(crate) const POLICY_OF_O: &str = "o.mfa_required, o.inactivity_timeout_seconds, \
    o.session_lifetime_seconds, o.max_attachment_bytes, o.attachment_kinds";

pub(crate) fn org(row: &AnyRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: id(&get::<String>(row, "id")?)?,
        name: get(row, "name")?,
        policy: policy(row)?,
        created_at: ts(get(row, "created_at")?)?,
    })
}

pub(crate) fn policy(row: &AnyRow) -> StoreResult<OrgPolicy> {
    let secs = |c: &str| -> StoreResult<u32> {
        u32::try_from(get::<i64>(row, c)?).map_err(|_| StoreError::Corrupt("policy"))
    };
    Ok(OrgPolicy {
        mfa_required: get::<i64>(row, "mfa_required")? != 0,
        inactivity_timeout_seconds: secs("inactivity_timeout_seconds")?,
        session_lifetime_seconds: secs("session_lifetime_seconds")?,
        max_attachment_bytes: u64::try_from(get::<i64>(row, "max_attachment_bytes")?)
            .map_err(|_| StoreError::Corrupt("policy"))?,
        attachment_kinds: AttachmentKinds::from_storage(&get::<String>(row, "attachment_kinds")?)
            .ok_or(StoreError::Corrupt("policy"))?,
    })
}

/// Maps a unique-constraint violation to `Conflict(field)`, anything else to `Database`.
pub(crate) fn conflict(field: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(field),
        _ => StoreError::Database(e),
    }
}
