//! Bearer secrets (agent tokens, sessions), their storage hashes, and passwords.
//!
//! A secret looks like `csa_<40 base62 characters><6 base62 checksum>`:
//! - the prefix says what it is (`csa_` an agent token, `css_` a console/API session),
//!   so a secret scanner can find a leaked one and a person can tell them apart;
//! - 40 random base62 characters carry about 238 bits of entropy;
//! - the checksum is the CRC-32 of everything before it, so a mistyped or truncated
//!   secret is refused before any lookup touches the store.
//!
//! Only the SHA-256 of a secret is stored. Tokens are long random strings, so a fast hash
//! is the right tool (Vault does the same); passwords are short and human-chosen, so
//! they get argon2id.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 40;
const CHECKSUM_LEN: usize = 6;

/// The kinds of bearer secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    AgentToken,
    Session,
}

impl SecretKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            SecretKind::AgentToken => "csa_",
            SecretKind::Session => "css_",
        }
    }
}

/// Fills `buf` from the operating system's CSPRNG. There is no fallback: without
/// randomness we cannot make a secret, and making a weak one would be worse than failing.
pub fn random_bytes(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// A fresh secret of the given kind.
pub fn generate(kind: SecretKind) -> String {
    let mut out = String::with_capacity(kind.prefix().len() + RANDOM_LEN + CHECKSUM_LEN);
    out.push_str(kind.prefix());
    let mut filled = 0;
    let mut buf = [0u8; 64];
    while filled < RANDOM_LEN {
        random_bytes(&mut buf);
        // Rejection sampling: 248 = 4 × 62, so bytes below it map onto base62 uniformly.
        for b in buf.iter().filter(|b| **b < 248) {
            if filled == RANDOM_LEN {
                break;
            }
            out.push(BASE62[(*b % 62) as usize] as char);
            filled += 1;
        }
    }
    let checksum = checksum(out.as_bytes());
    out.push_str(&checksum);
    out
}

fn checksum(body: &[u8]) -> String {
    let mut n = crc32fast::hash(body) as u64;
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("base62 is ASCII")
}

/// Which kind of secret `s` is, if it is well-formed: right prefix, right length, right
/// alphabet and a matching checksum. Nothing is looked up.
pub fn recognize(s: &str) -> Option<SecretKind> {
    let kind = [SecretKind::AgentToken, SecretKind::Session].into_iter().find(|k| s.starts_with(k.prefix()))?;
    let rest = &s[kind.prefix().len()..];
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (body, sum) = s.split_at(s.len() - CHECKSUM_LEN);
    bool::from(checksum(body.as_bytes()).as_bytes().ct_eq(sum.as_bytes())).then_some(kind)
}

/// The hex SHA-256 a secret is stored and looked up under.
pub fn storage_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two secrets' hashes (or any two secret strings) in constant time.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The first characters of a secret, safe to show and log: enough to tell two tokens
/// apart in a list, far too few to use.
pub fn hint(secret: &str) -> String {
    let visible = secret.len().min(SecretKind::AgentToken.prefix().len() + 4);
    format!("{}…", &secret[..visible])
}

/// Passwords: at least this many characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Passwords: at most this many bytes (argon2 takes any length; the cap bounds work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password was refused.
pub fn check_password_policy(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("the password must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("the password must be at most {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// Hashes a password with argon2id (OWASP parameters: 19 MiB, 2 passes) to a PHC string.
/// Slow on purpose: call it off the async runtime.
pub fn hash_password(password: &str) -> String {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters cannot fail on a bounded password")
        .to_string()
}

/// Verifies a password against a stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A PHC string for a password nobody knows, verified against when an e-mail is unknown
/// so that "no such account" takes as long as "wrong password".
pub fn decoy_password_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut pw = [0u8; 32];
        random_bytes(&mut pw);
        hash_password(&hex::encode(pw))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_recognised_with_their_kind() {
        for kind in [SecretKind::AgentToken, SecretKind::Session] {
            let s = generate(kind);
            assert!(s.starts_with(kind.prefix()));
            assert_eq!(s.len(), 4 + RANDOM_LEN + CHECKSUM_LEN);
            assert_eq!(recognize(&s), Some(kind));
        }
        assert_ne!(generate(SecretKind::AgentToken), generate(SecretKind::AgentToken));
    }

    #[test]
    fn a_single_typo_fails_the_checksum() {
        let s = generate(SecretKind::AgentToken);
        let mut chars: Vec<char> = s.chars().collect();
        let i = 10;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(recognize(&typo), None);
        assert_eq!(recognize(&s[..s.len() - 1]), None);
        assert_eq!(recognize("csa_"), None);
        assert_eq!(recognize("Bearer nonsense"), None);
    }

    #[test]
    fn passwords_hash_and_verify() {
        let phc = hash_password("correct horse battery staple");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn hints_reveal_little() {
        let s = generate(SecretKind::AgentToken);
        let h = hint(&s);
        assert!(h.starts_with("csa_") && h.chars().count() == 9);
    }
}
