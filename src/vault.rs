//! Secrets at rest: connector header values, sealed with XChaCha20-Poly1305 under a
//! master key that lives in a key file or the environment, never in the database.
//!
//! A sealed value is `v1.<key id>.<base64(nonce ‖ ciphertext)>`. The key id (the first 8
//! hex digits of the key's SHA-256) says which key sealed it, so after a rotation the
//! previous key can still open old values while the new one seals new ones. The
//! associated data binds each value to its place (workspace, tool, header name): a
//! sealed value copied to another tool or header will not open.
//!
//! Rotation (see docs/OPERATIONS.md): generate a new key, run
//! `countersign admin rotate-master-key`, which re-seals every value under it, then
//! replace the key file and restart.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use sha2::{Digest, Sha256};

/// The environment variable that may hold the master key (base64 of 32 bytes).
pub const ENV_KEY: &str = "COUNTERSIGN_MASTER_KEY";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("no master key is configured: set {ENV_KEY} or give a key file")]
    NoKey,
    #[error("the master key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("the value was sealed with master key {0}, which is not loaded")]
    UnknownKey(String),
    #[error("the sealed value is damaged or was moved from its place")]
    Damaged,
}

/// One 32-byte key and its id.
#[derive(Clone)]
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Result<Key, VaultError> {
        if bytes.len() != 32 {
            return Err(VaultError::BadKey);
        }
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).map_err(|_| VaultError::BadKey)?;
        Ok(Key { id, cipher })
    }
}

/// The keys a server holds: one to seal with, and earlier ones to open old values.
#[derive(Clone, Default)]
pub struct MasterKeys {
    current: Option<Key>,
    previous: Vec<Key>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material; ids are enough to tell keys apart.
        f.debug_struct("MasterKeys").field("current", &self.current.as_ref().map(|k| &k.id)).finish()
    }
}

/// Parses a key written as base64 (surrounding whitespace ignored).
fn parse_key_text(text: &str) -> Result<Key, VaultError> {
    let bytes = B64.decode(text.trim()).map_err(|_| VaultError::BadKey)?;
    Key::from_bytes(&bytes)
}

impl MasterKeys {
    /// No key: sealing and opening fail closed.
    pub fn none() -> Self {
        Self::default()
    }

    /// A key given as base64 text.
    pub fn from_base64(text: &str) -> Result<Self, VaultError> {
        Ok(MasterKeys { current: Some(parse_key_text(text)?), previous: Vec::new() })
    }

    /// Reads a key file (base64 text).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the master key file {}: {e}", path.display()))?;
        Self::from_base64(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Adds an earlier key, used only to open values sealed before a rotation.
    pub fn with_previous(mut self, other: MasterKeys) -> Self {
        self.previous.extend(other.current);
        self.previous.extend(other.previous);
        self
    }

    pub fn is_configured(&self) -> bool {
        self.current.is_some()
    }

    /// The id of the key that seals new values.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Seals `plaintext` for the place named by `aad`.
    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<String, VaultError> {
        let key = self.current.as_ref().ok_or(VaultError::NoKey)?;
        let mut nonce = [0u8; 24];
        crate::secrets::random_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(&nonce.into(), Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| VaultError::Damaged)?;
        let mut blob = nonce.to_vec();
        blob.extend(sealed);
        Ok(format!("v1.{}.{}", key.id, B64.encode(blob)))
    }

    /// Opens a value sealed for the place named by `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, VaultError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(VaultError::Damaged);
        };
        let key = self.current.iter().chain(&self.previous).find(|k| k.id == id).ok_or_else(|| VaultError::UnknownKey(id.to_string()))?;
        let blob = B64.decode(body).map_err(|_| VaultError::Damaged)?;
        if blob.len() < 24 + 16 {
            return Err(VaultError::Damaged);
        }
        let (nonce, ct) = blob.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| VaultError::Damaged)?;
        let plain = key.cipher.decrypt(&nonce.into(), Payload { msg: ct, aad: aad.as_bytes() }).map_err(|_| VaultError::Damaged)?;
        String::from_utf8(plain).map_err(|_| VaultError::Damaged)
    }

    /// The key id a sealed value names.
    pub fn sealed_key_id(sealed: &str) -> Option<&str> {
        sealed.strip_prefix("v1.").and_then(|r| r.split('.').next())
    }
}

/// Makes a fresh key and writes it to `path` as base64, readable by its owner only.
pub fn generate_key_file(path: &Path) -> std::io::Result<()> {
    let mut key = [0u8; 32];
    crate::secrets::random_bytes(&mut key);
    write_private(path, format!("{}\n", B64.encode(key)).as_bytes())
}

/// Writes a file that only its owner may read (0600), creating it fresh.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// The associated data that binds a connector header secret to its place.
pub fn header_aad(workspace_id: &str, tool: &str, header: &str) -> String {
    format!("countersign/connector-header/v1\0{workspace_id}\0{tool}\0{}", header.to_ascii_lowercase())
}

/// The associated data that binds a connector's secret query parameter to its place.
/// (Unlike header names, parameter names are case-sensitive.)
pub fn query_aad(workspace_id: &str, tool: &str, param: &str) -> String {
    format!("countersign/connector-query/v1\0{workspace_id}\0{tool}\0{param}")
}

/// The associated data that binds a webhook's signing secret to its subscription.
pub fn webhook_secret_aad(workspace_id: &str, webhook_id: &str) -> String {
    format!("countersign/webhook-secret/v1\0{workspace_id}\0{webhook_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKeys {
        let mut k = [0u8; 32];
        crate::secrets::random_bytes(&mut k);
        MasterKeys::from_base64(&B64.encode(k)).unwrap()
    }

    #[test]
    fn seal_and_open_round_trip_only_in_place() {
        let k = key();
        let sealed = k.seal("Bearer sk_live_123", "ws/tool/authorization").unwrap();
        assert!(!sealed.contains("sk_live"));
        assert_eq!(k.open(&sealed, "ws/tool/authorization").unwrap(), "Bearer sk_live_123");
        assert_eq!(k.open(&sealed, "ws/other-tool/authorization"), Err(VaultError::Damaged));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open(&tampered, "ws/tool/authorization").is_err());
    }

    #[test]
    fn previous_keys_open_old_values_after_rotation() {
        let old = key();
        let sealed = old.seal("secret", "aad").unwrap();
        let new = key();
        assert!(matches!(new.open(&sealed, "aad"), Err(VaultError::UnknownKey(_))));
        let both = new.clone().with_previous(old);
        assert_eq!(both.open(&sealed, "aad").unwrap(), "secret");
        let resealed = both.seal("secret", "aad").unwrap();
        assert_eq!(MasterKeys::sealed_key_id(&resealed), new.current_id());
    }

    #[test]
    fn without_a_key_nothing_is_sealed() {
        assert_eq!(MasterKeys::none().seal("x", "a"), Err(VaultError::NoKey));
        assert!(format!("{:?}", key()).len() < 80);
    }
}
