//! Secrets at rest: XChaCha20-Poly1305 with a random nonce per secret, bound to the row it
//! belongs to (associated data), so a ciphertext copied to another row does not open.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::StoreError;

/// Where the 32-byte key comes from.
#[derive(Clone, Default)]
pub enum KeySource {
    /// A key file beside the SQLite database (`usersync.db.key`), generated when the first
    /// secret is stored; none for PostgreSQL (see [`KeyLocation::Unset`]).
    #[default]
    Default,
    /// The key itself, base64 (`USERSYNC_SECRET_KEY`).
    Base64(String),
    /// A file holding the key in base64 (`USERSYNC_SECRET_KEY_FILE`); generated when the
    /// first secret is stored if it does not exist.
    File(PathBuf),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Default => f.write_str("Default"),
            KeySource::Base64(_) => f.write_str("Base64(***)"),
            KeySource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// A secret in memory: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(secret: impl Into<String>) -> Self {
        SecretString(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the store's key is, resolved against the database it seals secrets for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// `USERSYNC_SECRET_KEY`.
    Environment,
    /// A key file: named by `--secret-key-file` / `USERSYNC_SECRET_KEY_FILE` (`explicit`),
    /// or the default beside a SQLite database.
    File { path: PathBuf, explicit: bool },
    /// No key configured (the PostgreSQL default): sealing or opening a secret fails.
    Unset,
}

impl KeyLocation {
    /// Where `source` puts the key of a database on `backend` (at `sqlite_path`).
    pub fn resolve(source: &KeySource, sqlite_path: Option<&Path>) -> KeyLocation {
        match (source, sqlite_path) {
            (KeySource::Base64(_), _) => KeyLocation::Environment,
            (KeySource::File(path), _) => KeyLocation::File {
                path: path.clone(),
                explicit: true,
            },
            (KeySource::Default, Some(db)) => KeyLocation::File {
                path: key_path_beside(db),
                explicit: false,
            },
            (KeySource::Default, None) => KeyLocation::Unset,
        }
    }

    /// For messages and `usersync config`: where the key is and what state it is in.
    pub fn describe(&self) -> String {
        match self {
            KeyLocation::Environment => "the key in USERSYNC_SECRET_KEY".to_string(),
            KeyLocation::File { path, .. } => match std::fs::metadata(path) {
                Ok(meta) => format!(
                    "the key file {} (written {})",
                    path.display(),
                    meta.modified()
                        .map(crate::format_time)
                        .unwrap_or_else(|_| "at an unknown time".into())
                ),
                Err(_) => format!(
                    "the key file {} (it does not exist: it is generated when the first secret is \
                     stored, never for a database that already holds secrets)",
                    path.display()
                ),
            },
            KeyLocation::Unset => {
                "no key (USERSYNC_SECRET_KEY and USERSYNC_SECRET_KEY_FILE are not set)".to_string()
            }
        }
    }
}

/// The default key file for a SQLite database `x.db` is `x.db.key` beside it.
pub(crate) fn key_path_beside(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    db.with_file_name(name)
}

/// What `usersync` says when a secret must be sealed or read and no key is configured.
fn unset_key_message() -> String {
    let mut message =
        "no key for secrets at rest is configured: set USERSYNC_SECRET_KEY (32 bytes in \
         base64, e.g. from `openssl rand -base64 32`) or USERSYNC_SECRET_KEY_FILE (a file holding \
         one; generated if missing). A PostgreSQL database keeps no key file in the working \
         directory, so that every process sharing the database uses the same key"
            .to_string();
    if Path::new("usersync.key").exists() {
        message.push_str(
            "; earlier versions of usersync kept it in ./usersync.key, which exists here: \
             set USERSYNC_SECRET_KEY_FILE=usersync.key",
        );
    }
    message
}

/// Seals and opens secrets with the store's key. The key is read when the store opens; a
/// key file that does not exist yet is generated when the first secret is sealed, never
/// for a database that already holds secrets (the store checks that when it opens).
#[derive(Clone)]
pub struct SecretBox {
    inner: Arc<KeyState>,
}

struct KeyState {
    location: KeyLocation,
    cipher: OnceLock<XChaCha20Poly1305>,
    /// Serialises the generation of a missing key file.
    generating: Mutex<()>,
    generated: AtomicBool,
}

/// Sealed form: `v1.<base64(nonce || ciphertext)>`; the version allows key rotation later.
const SEALED_PREFIX: &str = "v1.";

/// What the key check seals: opening it proves the key is the database's.
const KEY_CHECK_TEXT: &str = "usersync key check";
const KEY_CHECK_CONTEXT: &str = "store_meta.key_check";

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        let cipher = OnceLock::new();
        let _ = cipher.set(XChaCha20Poly1305::new(Key::from_slice(key)));
        SecretBox {
            inner: Arc::new(KeyState {
                location: KeyLocation::Environment,
                cipher,
                generating: Mutex::new(()),
                generated: AtomicBool::new(false),
            }),
        }
    }

    /// The key at `location`, read now if it exists.
    pub(crate) fn load(source: &KeySource, location: KeyLocation) -> Result<Self, StoreError> {
        let cipher = OnceLock::new();
        match (&location, source) {
            (KeyLocation::Environment, KeySource::Base64(text)) => {
                let key = decode_key(text, "USERSYNC_SECRET_KEY")?;
                let _ = cipher.set(XChaCha20Poly1305::new(Key::from_slice(&key)));
            }
            (KeyLocation::File { path, .. }, _) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    let key = decode_key_file(&text, path)?;
                    let _ = cipher.set(XChaCha20Poly1305::new(Key::from_slice(&key)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Key(format!(
                        "cannot read the key file {}: {e}",
                        path.display()
                    )));
                }
            },
            _ => {}
        }
        Ok(SecretBox {
            inner: Arc::new(KeyState {
                location,
                cipher,
                generating: Mutex::new(()),
                generated: AtomicBool::new(false),
            }),
        })
    }

    pub fn location(&self) -> &KeyLocation {
        &self.inner.location
    }

    /// Whether a key is at hand (read, given, or generated).
    pub(crate) fn is_available(&self) -> bool {
        self.inner.cipher.get().is_some()
    }

    /// The key file generated by this process, if it generated one.
    pub fn generated_file(&self) -> Option<&Path> {
        match &self.inner.location {
            KeyLocation::File { path, .. } if self.inner.generated.load(Ordering::Relaxed) => {
                Some(path)
            }
            _ => None,
        }
    }

    /// The key in use, for messages: where it is and whether it was generated just now.
    pub fn describe(&self) -> String {
        let mut text = self.inner.location.describe();
        if self.inner.generated.load(Ordering::Relaxed) {
            text.push_str(", generated just now because it was missing");
        }
        text
    }

    /// The cipher to seal with; a missing key file is generated now.
    fn sealing_cipher(&self) -> Result<&XChaCha20Poly1305, StoreError> {
        if let Some(cipher) = self.inner.cipher.get() {
            return Ok(cipher);
        }
        let KeyLocation::File { path, .. } = &self.inner.location else {
            return Err(StoreError::Key(unset_key_message()));
        };
        let _turn = self
            .inner
            .generating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cipher) = self.inner.cipher.get() {
            return Ok(cipher);
        }
        let key = load_or_create(path)?;
        let _ = self
            .inner
            .cipher
            .set(XChaCha20Poly1305::new(Key::from_slice(&key)));
        self.inner.generated.store(true, Ordering::Relaxed);
        self.inner
            .cipher
            .get()
            .ok_or_else(|| StoreError::Key("the key could not be kept".into()))
    }

    /// The cipher to open with: a missing key is an error, never generated.
    fn opening_cipher(&self) -> Result<&XChaCha20Poly1305, StoreError> {
        if let Some(cipher) = self.inner.cipher.get() {
            return Ok(cipher);
        }
        Err(StoreError::Key(match &self.inner.location {
            KeyLocation::File { path, .. } => format!(
                "the key file {} does not exist, so the stored secrets cannot be read",
                path.display()
            ),
            _ => unset_key_message(),
        }))
    }

    /// Encrypts `secret` for the place `context` names (such as `sources.secret:12`).
    pub fn seal(&self, secret: &SecretString, context: &str) -> Result<String, StoreError> {
        let cipher = self.sealing_cipher()?;
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Key("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    /// Decrypts what [`SecretBox::seal`] made for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<SecretString, StoreError> {
        let cipher = self.opening_cipher()?;
        let wrong = || {
            StoreError::Key(format!(
                "the secret stored for {context} cannot be decrypted with {}",
                self.describe()
            ))
        };
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or_else(wrong)?;
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| wrong())?;
        String::from_utf8(plain)
            .map(SecretString)
            .map_err(|_| wrong())
    }

    /// The check value stored with the first secret: it opens only with this key.
    pub(crate) fn check_value(&self) -> Result<String, StoreError> {
        self.seal(&SecretString::new(KEY_CHECK_TEXT), KEY_CHECK_CONTEXT)
    }

    /// Whether `check` (a stored check value) was made with this key.
    pub(crate) fn matches(&self, check: &str) -> bool {
        self.open(check, KEY_CHECK_CONTEXT)
            .is_ok_and(|s| s.expose() == KEY_CHECK_TEXT)
    }
}

fn decode_key(text: &str, origin: &str) -> Result<[u8; 32], StoreError> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| {
            StoreError::Key(format!(
                "{origin} must hold 32 bytes in base64 (44 characters); generate one with `openssl rand -base64 32`"
            ))
        })
}

/// Reads the key file, or creates it with a new key when it does not exist (and another
/// process did not create it first). The file appears whole or not at all: written and
/// synced under a temporary name, then linked into place (which never overwrites), then
/// the folder synced; so neither a concurrent reader nor a crash sees half a key.
fn load_or_create(path: &Path) -> Result<[u8; 32], StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => return decode_key_file(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StoreError::Key(format!(
                "cannot read the key file {}: {e}",
                path.display()
            )));
        }
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let cannot = |e: std::io::Error| {
        StoreError::Key(format!(
            "cannot create the key file {}: {e}",
            path.display()
        ))
    };
    let mut temporary = path.as_os_str().to_os_string();
    temporary.push(format!(
        ".new-{}-{:08x}",
        std::process::id(),
        rand::rng().next_u32()
    ));
    let temporary = PathBuf::from(temporary);
    write_private(&temporary, &STANDARD.encode(key)).map_err(cannot)?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {}
        // Another process made it first: that key is the one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return load_or_create(path),
        Err(e) => return Err(cannot(e)),
    }
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    tracing::info!(path = %path.display(), "generated a new key for secrets at rest; back it up with the database: without it the stored secrets cannot be read");
    Ok(key)
}

fn decode_key_file(text: &str, path: &Path) -> Result<[u8; 32], StoreError> {
    decode_key(text, &format!("the key file {}", path.display())).map_err(|e| match e {
        StoreError::Key(why) => StoreError::KeyLost {
            problem: format!(
                "{why}; restore the key file from the backup made with the database (if the key \
                 is lost, move the file away first)"
            ),
            sealed: None,
        },
        other => other,
    })
}

/// Writes a new file readable by its owner only, and syncs it to disk.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_in_its_own_place() {
        let b = SecretBox::from_key(&[7; 32]);
        let secret = SecretString::new("hunter2-client-secret");
        let sealed = b.seal(&secret, "sources.secret:1").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(b.open(&sealed, "sources.secret:1").unwrap(), secret);
        assert!(b.open(&sealed, "sources.secret:2").is_err());
        let other = SecretBox::from_key(&[8; 32]);
        assert!(other.open(&sealed, "sources.secret:1").is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert!(!format!("{:?}", KeySource::Base64("abc".into())).contains("abc"));
    }

    #[test]
    fn a_missing_key_file_is_generated_and_then_reused() {
        let dir = std::env::temp_dir().join(format!("usersync-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.key");
        let _ = std::fs::remove_file(&path);
        let first = load_or_create(&path).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), first);
        std::fs::write(&path, "short").unwrap();
        assert!(
            load_or_create(&path)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
