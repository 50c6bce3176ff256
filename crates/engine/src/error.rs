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
    /// A setting of a source is missing or wrong; names the setting and the fix.
    #[error("{field}: {problem}")]
    Config { field: String, problem: String },
}

impl EngineError {
    pub(crate) fn config(field: &str, problem: impl Into<String>) -> Self {
        EngineError::Config {
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}
