//! Secrets at rest: XChaCha20-Poly1305 with a random nonce per secret, bound to the row it
//! belongs to (associated data), so a ciphertext copied to another row does not open.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::StoreError;

/// Where the 32-byte key comes from.
#[derive(Clone, Default)]
pub enum KeySource {
    /// A key file beside the SQLite database (`usersync.db.key`), or `usersync.key` in the
    /// working directory for PostgreSQL; generated on first use.
    #[default]
    Default,
    /// The key itself, base64 (`USERSYNC_SECRET_KEY`).
    Base64(String),
    /// A file holding the key in base64 (`USERSYNC_SECRET_KEY_FILE`); generated if missing.
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

/// Seals and opens secrets with the store's key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

/// Sealed form: `v1.<base64(nonce || ciphertext)>`; the version allows key rotation later.
const SEALED_PREFIX: &str = "v1.";

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        SecretBox {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    pub(crate) fn load(source: &KeySource, beside_db: Option<&Path>) -> Result<Self, StoreError> {
        let key = match source {
            KeySource::Base64(text) => decode_key(text, "USERSYNC_SECRET_KEY")?,
            KeySource::File(path) => load_or_create(path)?,
            KeySource::Default => {
                let path = beside_db
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("usersync.key"));
                load_or_create(&path)?
            }
        };
        Ok(Self::from_key(&key))
    }

    /// Encrypts `secret` for the place `context` names (such as `sources.secret:12`).
    pub fn seal(&self, secret: &SecretString, context: &str) -> Result<String, StoreError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
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
        let wrong = || {
            StoreError::Key(format!(
                "the secret stored for {context} cannot be decrypted with this key: \
                 use the key it was stored with (USERSYNC_SECRET_KEY or USERSYNC_SECRET_KEY_FILE), \
                 or set the secret again"
            ))
        };
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or_else(wrong)?;
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = self
            .cipher
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

fn load_or_create(path: &Path) -> Result<[u8; 32], StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => decode_key(&text, &format!("the key file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            write_private(path, &STANDARD.encode(key)).map_err(|e| {
                StoreError::Key(format!(
                    "cannot create the key file {}: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(path = %path.display(), "generated a new key for secrets at rest; back it up with the database");
            Ok(key)
        }
        Err(e) => Err(StoreError::Key(format!(
            "cannot read the key file {}: {e}",
            path.display()
        ))),
    }
}

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
    file.write_all(b"\n")
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
