//! The engine's error type.

use usersync_store::StoreError;

/// Why an engine operation could not run at all. A run that started and failed is not an
/// error: it is a [`crate::RunOutcome`] with status `failed`, recorded with its reason.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A source option was refused; the message lists the valid keys or values.
    #[error(transparent)]
    Option(#[from] usersync_core::OptionError),
    /// A filter rule was refused; the message names the wrong part.
    #[error(transparent)]
    Filter(#[from] usersync_core::FilterError),
    /// An option names a tenant group the tenant does not have.
    #[error(transparent)]
    TenantGroup(#[from] usersync_core::UnknownTenantGroup),
    /// A setting of a source is missing or wrong; names the setting and the fix.
    #[error("{field}: {problem}")]
    Config { field: String, problem: String },
    /// The operation collides with the state of things (a run in progress, a run that is
    /// not held).
    #[error("{0}")]
    Conflict(String),
    /// No valid sign-in or token was given (a wrong password, an unknown or revoked token).
    #[error("{0}")]
    Unauthenticated(String),
    /// Too many attempts lately (failed sign-ins): wait and try again.
    #[error("{0}")]
    Limited(String),
    /// The principal sees the object but may not do this to it (a read-only role).
    #[error("{0}")]
    Forbidden(String),
    /// The tenant answered a call outside a run (a subscription) with an error.
    #[error("{what}: {error}")]
    Tenant {
        what: &'static str,
        #[source]
        error: Box<usersync_graph::GraphError>,
    },
}

/// What kind of error it is, for every surface to map without reading text (an exit code,
/// an HTTP status, a hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad input; `field` names it when known.
    Invalid,
    NotFound,
    Conflict,
    /// No valid sign-in or token.
    Unauthenticated,
    /// Too many attempts lately: wait.
    Limited,
    /// Seen but not allowed (a read-only role asking for a change).
    Forbidden,
    /// The tenant refused: consent or a permission missing, a secret wrong or expired.
    Consent,
    /// Throttled, busy or unreachable: retry later.
    Unavailable,
    /// Stored data cannot be read, or a key does not open it.
    Corrupt,
    /// Anything else (a database error).
    Internal,
}

impl EngineError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Store(e) => match e {
                StoreError::BadUrl { .. } | StoreError::Invalid(_) => ErrorKind::Invalid,
                StoreError::NotFound { .. } => ErrorKind::NotFound,
                StoreError::Conflict(_) | StoreError::DirectoryChanged { .. } => {
                    ErrorKind::Conflict
                }
                StoreError::Busy { .. } | StoreError::Open { .. } => ErrorKind::Unavailable,
                StoreError::Corrupt(_)
                | StoreError::Key(_)
                | StoreError::KeyLost { .. }
                | StoreError::SecretUnreadable { .. }
                | StoreError::Unusable { .. } => ErrorKind::Corrupt,
                StoreError::Database(_) => ErrorKind::Internal,
            },
            EngineError::Option(_) | EngineError::Filter(_) | EngineError::Config { .. } => {
                ErrorKind::Invalid
            }
            EngineError::TenantGroup(_) => ErrorKind::Invalid,
            EngineError::Conflict(_) => ErrorKind::Conflict,
            EngineError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            EngineError::Limited(_) => ErrorKind::Limited,
            EngineError::Forbidden(_) => ErrorKind::Forbidden,
            EngineError::Tenant { error, .. } => match error.as_ref() {
                usersync_graph::GraphError::Forbidden { .. }
                | usersync_graph::GraphError::Unauthorized { .. }
                | usersync_graph::GraphError::Token { .. } => ErrorKind::Consent,
                // Throttled, down or unreachable: another try later may work.
                usersync_graph::GraphError::Throttled { .. }
                | usersync_graph::GraphError::Transport { .. } => ErrorKind::Unavailable,
                usersync_graph::GraphError::Server { status, .. } if *status >= 500 => {
                    ErrorKind::Unavailable
                }
                usersync_graph::GraphError::NotFound { .. } => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            },
        }
    }

    /// The input field at fault, when the error is about one.
    pub fn field(&self) -> Option<String> {
        match self {
            EngineError::Config { field, .. } => Some(field.clone()),
            EngineError::Option(usersync_core::OptionError::BadValue { key, .. }) => {
                Some(key.clone())
            }
            EngineError::Option(usersync_core::OptionError::UnknownKey { key }) => {
                Some(key.clone())
            }
            EngineError::TenantGroup(e) => Some(e.key.to_string()),
            _ => None,
        }
    }
}

impl EngineError {
    pub(crate) fn config(field: &str, problem: impl Into<String>) -> Self {
        EngineError::Config {
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// An error and its causes as one line, each cause once: sources whose text the message
/// already holds are left out (so "refused: refused" never happens).
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the database: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_appears_once() {
        let inner = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let text = error_text(&Outer(inner));
        assert_eq!(
            text,
            "cannot open the database: Connection refused (os error 111)"
        );
    }
}
