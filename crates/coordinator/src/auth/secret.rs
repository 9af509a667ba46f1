//! Secrets: random tokens, the digests kept instead of them, comparison in
//! constant time, and files only their owner can read.
//!
//! Tokens are 32 random bytes (256 bits), so a plain SHA-256 digest is as good a
//! stored form as a slow password hash, and costs well under a microsecond to
//! check on every request. Passwords, which people choose, use argon2 instead
//! ([`super::admin`]).

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of a secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `secret` hashes to this digest, in time that does not depend on where they differ.
    pub fn matches(&self, secret: &str) -> bool {
        bool::from(Self::of(secret).0.ct_eq(&self.0))
    }

    pub fn to_hex(self) -> String {
        use fmt::Write as _;
        let mut hex = String::with_capacity(64);
        for byte in self.0 {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

/// Never prints the digest itself: enough to tell two apart in a debug dump.
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// Any of `digests` matches `secret`. Every digest is compared, so the time
/// taken does not tell which one matched.
pub fn any_matches(digests: &[Digest], secret: &str) -> bool {
    let presented = Digest::of(secret);
    digests
        .iter()
        .fold(subtle::Choice::from(0), |found, d| {
            found | d.0.ct_eq(&presented.0)
        })
        .into()
}

/// A new random token: `prefix` followed by 32 random bytes in URL-safe base64.
/// The prefix tells a reader (and a secret scanner) what kind of token it is.
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // The OS's random source failing leaves no safe way to go on.
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: &axum::http::HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename), readable and
/// writable by the owner only (mode 0600 where there are modes), created that way
/// rather than narrowed afterwards, so the secret is never readable by others.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    // Elsewhere the user profile's own access rules protect the data folder.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    let mut temp = builder.tempfile_in(dir)?;
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_matches_only_its_own_secret_and_round_trips_as_hex() {
        let digest = Digest::of("llmr_abc");
        assert!(digest.matches("llmr_abc"));
        assert!(!digest.matches("llmr_abd"));
        assert_eq!(Digest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(Digest::from_hex("zz"), None);
        assert!(!format!("{digest:?}").contains(&digest.to_hex()));
    }

    #[test]
    fn generated_tokens_carry_their_prefix_and_differ() {
        let a = generate_token("llmr_");
        let b = generate_token("llmr_");
        assert!(a.starts_with("llmr_") && a.len() == 5 + 43, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn any_matches_finds_one_of_several() {
        let digests = [Digest::of("one"), Digest::of("two")];
        assert!(any_matches(&digests, "two"));
        assert!(!any_matches(&digests, "three"));
        assert!(!any_matches(&[], "one"));
    }

    #[test]
    fn bearer_takes_the_token_of_the_bearer_scheme_only() {
        let value = |s: &str| axum::http::HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer(&value("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&value("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&value("Basic abc")), None);
        assert_eq!(bearer(&value("Bearer ")), None);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_created_for_the_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private_file(&path, b"x").unwrap();
        write_private_file(&path, b"y").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"y");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
