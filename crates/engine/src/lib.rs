//! usersync-engine: one sync run = read the source -> plan -> preview or apply -> record.
//!
//! Architecture invariant: every surface (CLI today; web console, REST API and scheduler
//! later) goes through [`Engine`]; none of them holds sync logic. Sources are reached only
//! through the [`Source`] trait, so Microsoft 365 is the first source, not the only one.

mod error;
mod office365;
mod run;
mod source;

pub use error::EngineError;
pub use office365::{
    NewOffice365Source, Office365Settings, Office365Source, ReadNeeds, connect_office365,
    set_source_options,
};
pub use run::{Engine, EngineOptions, RunOutcome};
pub use source::{NoProgress, Progress, Source, SourceError, SourceRead};
