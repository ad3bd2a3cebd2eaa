//! The errors a use case can end with. The HTTP layer maps each to a status and a stable code;
//! messages are safe to show (no secrets, no PHI, no internals).

use haven_domain::ValidationError;
use haven_domain::session::SessionState;
use haven_store::StoreError;

/// Why a use case did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No such thing, or not visible to the caller (another organisation, no permission).
    #[error("not found")]
    NotFound,
    /// No valid session.
    #[error("authentication required")]
    Unauthenticated,
    /// The session ended by inactivity or lifetime; sign in again.
    #[error("the session has expired")]
    SessionExpired,
    /// The session has not completed sign-in: the second factor (or enrolment) is due.
    #[error("multi-factor authentication is required")]
    MfaRequired(SessionState),
    /// Wrong username or password (deliberately not saying which).
    #[error("the username or password is incorrect")]
    InvalidCredentials,
    /// Wrong, expired or already used one-time code.
    #[error("the code is incorrect, expired or already used")]
    InvalidCode,
    /// Too many failures; try again after this many seconds.
    #[error("too many failed attempts; try again later")]
    Throttled {
        /// Seconds until an attempt is allowed.
        retry_after_secs: u64,
    },
    /// A value was rejected.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The request conflicts with the current state (stable code, human message).
    #[error("{1}")]
    Conflict(&'static str, String),
    /// Allowed to see it, not to do this (stable code, human message).
    #[error("{1}")]
    Forbidden(&'static str, String),
    /// The upload is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The content is of a kind that is not accepted.
    #[error("{0}")]
    Unsupported(String),
    /// Storage is unreachable or failing: retry later.
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
    /// A bug or an impossible state; details are for the server log only.
    #[error("internal error")]
    Internal(String),
}

/// Result alias for use cases.
pub type AppResult<T> = Result<T, AppError>;

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::NotFound,
            StoreError::Conflict("username") => {
                AppError::Conflict("username_taken", "this username is already in use".into())
            }
            StoreError::Conflict(what) => AppError::Conflict(what, format!("conflict: {what}")),
            StoreError::Database(e) => AppError::Unavailable(e.to_string()),
            other => AppError::Internal(other.to_string()),
        }
    }
}
