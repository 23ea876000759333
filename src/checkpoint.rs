//! Signed checkpoints of the audit chain.
//!
//! The hash chain proves that nothing *inside* a log was changed, but not that nothing
//! was cut off its end: a log truncated after seq 900 is a perfectly sound chain of 900
//! events. A checkpoint closes that gap. The server signs its chain head — "workspace W's
//! log held seq N with hash H at time T" — with an Ed25519 key only it holds; anyone who
//! kept that statement can later prove that a log *extends* it (it still has seq N, with
//! hash H, and the chain holds from genesis through its end) or catch that it does not.
//!
//! The signed message is the RFC 8785 canonical form of exactly these fields:
//! `{algorithm, hash, key_id, seq, ts, workspace_id}`. A checkpoint as kept and exchanged
//! is those fields plus `public_key` and `signature` (both standard base64). `key_id` is
//! the first 16 hex digits of the SHA-256 of the raw 32-byte public key, so it can be
//! recomputed from the key and never has to be trusted on its own.
//!
//! The signing key lives in the data directory as `signing.key`: the base64 of a 32-byte
//! Ed25519 seed, readable by its owner only (0600), like `master.key`.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::canonical;

/// The only algorithm checkpoints use.
pub const ALGORITHM: &str = "ed25519";

/// The key file's name in a data directory.
pub const KEY_FILE: &str = "signing.key";

/// A signed statement about a workspace's chain head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub workspace_id: String,
    /// The head's `seq` (0 for an empty log).
    pub seq: i64,
    /// The head's `hash` (the genesis hash for an empty log).
    pub hash: String,
    /// When it was signed (RFC 3339, UTC): the log held at least `seq` events then.
    pub ts: String,
    /// The first 16 hex digits of SHA-256 over the raw public key.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The raw 32-byte Ed25519 public key, standard base64.
    pub public_key: String,
    /// The 64-byte Ed25519 signature over the canonical form of the signed fields,
    /// standard base64.
    pub signature: String,
}

/// The fields a signature covers, in the form that is canonicalised and signed.
#[derive(Serialize)]
struct Signed<'a> {
    workspace_id: &'a str,
    seq: i64,
    hash: &'a str,
    ts: &'a str,
    key_id: &'a str,
    algorithm: &'a str,
}

impl Checkpoint {
    /// The exact bytes the signature covers: RFC 8785 canonical JSON of
    /// `{algorithm, hash, key_id, seq, ts, workspace_id}`.
    pub fn signed_message(&self) -> Result<String, CheckpointError> {
        let view = Signed {
            workspace_id: &self.workspace_id,
            seq: self.seq,
            hash: &self.hash,
            ts: &self.ts,
            key_id: &self.key_id,
            algorithm: &self.algorithm,
        };
        canonical::canonicalize(&view).map_err(|e| CheckpointError::Malformed(e.to_string()))
    }

    /// Checks the signature. With `trusted`, the checkpoint must have been signed by that
    /// key; without, by the key it carries (which proves it was not altered, but not who
    /// signed it: pin the server's key with `trusted` for that).
    pub fn verify(&self, trusted: Option<&PublicKey>) -> Result<(), CheckpointError> {
        if self.algorithm != ALGORITHM {
            return Err(CheckpointError::Malformed(format!("algorithm is `{}`; only `{ALGORITHM}` is supported", self.algorithm)));
        }
        if self.seq < 0 {
            return Err(CheckpointError::Malformed("seq is negative".into()));
        }
        // The key a checkpoint carries is part of it: a bad one is a malformed checkpoint.
        let carried = PublicKey::from_base64(&self.public_key).map_err(|e| CheckpointError::Malformed(format!("public_key: {e}")))?;
        if carried.key_id != self.key_id {
            return Err(CheckpointError::Malformed(format!(
                "key_id `{}` is not the id of the public key it carries (that would be `{}`)",
                self.key_id, carried.key_id
            )));
        }
        let key = match trusted {
            Some(t) if t.key.as_bytes() != carried.key.as_bytes() => {
                return Err(CheckpointError::WrongKey { expected: t.key_id.clone(), found: carried.key_id });
            }
            Some(t) => t,
            None => &carried,
        };
        let sig_bytes = B64.decode(self.signature.trim()).map_err(|_| CheckpointError::Malformed("signature is not base64".into()))?;
        let signature = Signature::from_slice(&sig_bytes).map_err(|_| CheckpointError::Malformed("signature is not 64 bytes".into()))?;
        let message = self.signed_message()?;
        key.key.verify_strict(message.as_bytes(), &signature).map_err(|_| CheckpointError::BadSignature)
    }
}

/// Why a checkpoint cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is malformed: {0}")]
    Malformed(String),
    /// A public key (given on its own, or inside a checkpoint) that is not one.
    #[error("not an Ed25519 public key: {0}")]
    BadKey(&'static str),
    #[error("the signature does not verify: the checkpoint was altered after it was signed, or was never signed by this key")]
    BadSignature,
    #[error("the checkpoint was signed by key {found}, not by the trusted key {expected}")]
    WrongKey { expected: String, found: String },
}

/// An Ed25519 public key and its id.
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: VerifyingKey,
    pub key_id: String,
}

impl PublicKey {
    /// Parses a raw 32-byte public key written as standard base64.
    pub fn from_base64(text: &str) -> Result<PublicKey, CheckpointError> {
        let bytes = B64.decode(text.trim()).map_err(|_| CheckpointError::BadKey("it is not base64"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| CheckpointError::BadKey("it is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| CheckpointError::BadKey("it is not a point on the curve"))?;
        Ok(PublicKey { key, key_id: key_id(&bytes) })
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.key.as_bytes())
    }
}

/// The id of a raw public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// The public half of the server's signing key, as `GET /v1/audit/public-key` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyInfo {
    /// Always `ed25519`.
    pub algorithm: String,
    pub key_id: String,
    /// The raw 32-byte public key, standard base64.
    pub public_key: String,
}

/// The server's signing key.
pub struct Signer {
    key: SigningKey,
    key_id: String,
    public_key: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Signer").field("key_id", &self.key_id).finish()
    }
}

impl Signer {
    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key().to_bytes();
        Signer { key, key_id: key_id(&public), public_key: B64.encode(public) }
    }

    /// A fresh random key that lives only in memory: for tests and embedders that did not
    /// give one. `countersign serve` always uses the data directory's key file.
    pub fn ephemeral() -> Signer {
        let mut seed = [0u8; 32];
        crate::secrets::random_bytes(&mut seed);
        Signer::from_seed(&seed)
    }

    /// Reads a key file (base64 of a 32-byte seed, surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Signer, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the signing key file {}: {e}", path.display()))?;
        let bytes = B64.decode(text.trim()).map_err(|_| format!("{}: the signing key must be base64", path.display()))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{}: the signing key must be 32 bytes (an Ed25519 seed), base64-encoded", path.display()))?;
        Ok(Signer::from_seed(&seed))
    }

    /// Reads the key file at `path`, first creating it (0600) with a fresh key if it does
    /// not exist. Returns the signer and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Signer, bool), String> {
        if path.exists() {
            return Signer::from_file(path).map(|s| (s, false));
        }
        generate_key_file(path).map_err(|e| format!("cannot write the signing key {}: {e}", path.display()))?;
        Signer::from_file(path).map(|s| (s, true))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn public_key(&self) -> PublicKeyInfo {
        PublicKeyInfo { algorithm: ALGORITHM.into(), key_id: self.key_id.clone(), public_key: self.public_key.clone() }
    }

    /// Signs a chain head.
    pub fn sign(&self, workspace_id: &str, seq: i64, hash: &str, ts: &str) -> Checkpoint {
        let mut c = Checkpoint {
            workspace_id: workspace_id.to_string(),
            seq,
            hash: hash.to_string(),
            ts: ts.to_string(),
            key_id: self.key_id.clone(),
            algorithm: ALGORITHM.into(),
            public_key: self.public_key.clone(),
            signature: String::new(),
        };
        // The fields are plain strings and an integer: canonicalisation cannot fail. Were
        // it ever to, the empty signature would fail every verification (fail closed).
        if let Ok(message) = c.signed_message() {
            c.signature = B64.encode(self.key.sign(message.as_bytes()).to_bytes());
        }
        c
    }
}

/// Makes a fresh signing key and writes it to `path` as base64, readable by its owner
/// only (0600). Refuses to overwrite an existing file.
pub fn generate_key_file(path: &Path) -> std::io::Result<()> {
    let mut seed = [0u8; 32];
    crate::secrets::random_bytes(&mut seed);
    crate::vault::write_private(path, format!("{}\n", B64.encode(seed)).as_bytes())
}

/// What [`rotate_key_file`] did.
pub struct Rotation {
    /// The key retired: its private half is gone, its public half kept.
    pub old: PublicKeyInfo,
    /// Where the old public key was written, to verify what it signed.
    pub old_public_key_file: std::path::PathBuf,
    pub new: PublicKeyInfo,
}

/// Replaces the signing key at `path` with a fresh one.
///
/// The new key is written beside it (0600, synced) and renamed over it, so the file holds
/// one whole key or the other whatever happens. The old private key is not kept — nothing
/// more may be signed with it — but its public key is written to
/// `signing-key-<key_id>.pub` beside it: the checkpoints it signed still verify.
pub fn rotate_key_file(path: &Path) -> Result<Rotation, String> {
    let old = Signer::from_file(path)?.public_key();
    let fresh = std::path::PathBuf::from({
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        name
    });
    // A rotation that died half-way leaves this; it was never in use.
    let _ = std::fs::remove_file(&fresh);
    generate_key_file(&fresh).map_err(|e| format!("cannot write a new signing key to {}: {e}", fresh.display()))?;
    let old_public_key_file = path.with_file_name(format!("signing-key-{}.pub", old.key_id));
    // Synced before the rename: once the old private key is gone, this is all that is left.
    (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&old_public_key_file)?;
        f.write_all(format!("{}\n", old.public_key).as_bytes())?;
        f.sync_all()
    })()
    .map_err(|e| format!("cannot keep the old public key in {}: {e}", old_public_key_file.display()))?;
    std::fs::rename(&fresh, path).map_err(|e| format!("cannot put the new signing key in place at {}: {e}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        // The rename is durable once the directory is.
        let _ = d.sync_all();
    }
    let new = Signer::from_file(path)?.public_key();
    Ok(Rotation { old, old_public_key_file, new })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> (Signer, Checkpoint) {
        let s = Signer::ephemeral();
        let c = s.sign("org_1", 42, &"ab".repeat(32), "2026-01-01T00:00:00.000000Z");
        (s, c)
    }

    #[test]
    fn a_signed_checkpoint_verifies_with_its_own_key_and_the_pinned_one() {
        let (s, c) = signed();
        assert_eq!(c.verify(None), Ok(()));
        let pinned = PublicKey::from_base64(&s.public_key().public_key).unwrap();
        assert_eq!(c.verify(Some(&pinned)), Ok(()));
        assert_eq!(pinned.key_id, c.key_id);
    }

    #[test]
    fn every_signed_field_is_covered() {
        let (_, c) = signed();
        let changes: [fn(&mut Checkpoint); 4] = [
            |c| c.seq += 1,
            |c| c.hash = "cd".repeat(32),
            |c| c.ts = "2026-01-01T00:00:01.000000Z".into(),
            |c| c.workspace_id = "org_2".into(),
        ];
        for change in changes {
            let mut t = c.clone();
            change(&mut t);
            assert_eq!(t.verify(None), Err(CheckpointError::BadSignature));
        }
    }

    #[test]
    fn another_key_is_refused_and_a_forged_key_id_is_caught() {
        let (_, c) = signed();
        let other = Signer::ephemeral();
        let pinned = PublicKey::from_base64(&other.public_key().public_key).unwrap();
        assert!(matches!(c.verify(Some(&pinned)), Err(CheckpointError::WrongKey { .. })));
        // Re-signed by an impostor who kept the original key id.
        let mut forged = other.sign("org_1", 42, &c.hash, &c.ts);
        forged.key_id = c.key_id.clone();
        assert!(matches!(forged.verify(None), Err(CheckpointError::Malformed(_))));
    }

    #[test]
    fn the_message_is_the_canonical_form_of_the_signed_fields() {
        let (_, c) = signed();
        let m = c.signed_message().unwrap();
        assert!(m.starts_with("{\"algorithm\":\"ed25519\",\"hash\":\""), "{m}");
        assert!(m.ends_with(",\"seq\":42,\"ts\":\"2026-01-01T00:00:00.000000Z\",\"workspace_id\":\"org_1\"}"), "{m}");
        assert!(!m.contains("signature") && !m.contains("public_key"));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let (_, mut c) = signed();
        c.signature = "!!".into();
        assert!(matches!(c.verify(None), Err(CheckpointError::Malformed(_))));
        c.signature = B64.encode([0u8; 10]);
        assert!(matches!(c.verify(None), Err(CheckpointError::Malformed(_))));
        let (_, mut c) = signed();
        c.public_key = B64.encode([1u8; 31]);
        assert!(matches!(c.verify(None), Err(CheckpointError::Malformed(_))));
        let (_, mut c) = signed();
        c.algorithm = "rsa".into();
        assert!(matches!(c.verify(None), Err(CheckpointError::Malformed(_))));
    }

    #[test]
    fn the_key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let (a, created) = Signer::load_or_create(&path).unwrap();
        assert!(created);
        let (b, created) = Signer::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
