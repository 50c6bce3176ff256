//! usersync-lookup: answers the mail system's questions about the directory over
//! Postfix's socketmap protocol (`socketmap:inet:HOST:PORT:MAP`), from tables held in
//! memory, so that no lookup waits on the database:
//!
//! - `recipients`: an active address or alias of a protected domain (`+tag` ignored) is
//!   `OK`; a removed, unknown or unprotected one `NOTFOUND` (for `relay_recipient_maps`);
//! - `domains`: a protected domain is `OK` (for `relay_domains`);
//! - `transport`: a domain's destination route, `smtp:[host]:25` (for `transport_maps`).
//!
//! Until the tables are first loaded every answer is `TEMP` (mail is deferred, never
//! bounced); when the database cannot be read the last good copy answers.
//!
//! Layout: `netstring` (framing), `tables` (the maps and their answers; pure), `server`
//! (connections, and the task that reloads the tables when the directory changes).

mod netstring;
mod server;
mod tables;

pub use netstring::{MAX_LENGTH, NetstringError, decode, encode};
pub use server::{LookupOptions, LookupService, keep_loaded, load, serve};
pub use tables::{DomainEntry, LookupTables, MAPS, Reply, microsoft365_route};

/// Where `usersync lookup serve` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10027";
