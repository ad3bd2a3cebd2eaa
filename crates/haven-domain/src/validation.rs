//! The error every validation rule returns: which field, a stable code, and a message a person
//! can act on. It never echoes the rejected value, which may be a secret or PHI.

/// A rejected input value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The request field (or setting) that was rejected, e.g. `password`.
    pub field: &'static str,
    /// A stable machine-readable code, e.g. `password_too_short`.
    pub code: &'static str,
    /// A human-readable explanation, without the rejected value.
    pub message: String,
}

impl ValidationError {
    /// Builds a validation error.
    pub fn new(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { field, code, message: message.into() }
    }
}

/// Checks a free-text name: trimmed length within bounds, no control characters.
pub fn check_name(field: &'static str, value: &str, max_chars: usize) -> Result<String, ValidationError> {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len == 0 {
        return Err(ValidationError::new(field, "empty", format!("{field} must not be empty")));
    }
    if len > max_chars {
        return Err(ValidationError::new(
            field,
            "too_long",
            format!("{field} must be at most {max_chars} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "control_characters",
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}
