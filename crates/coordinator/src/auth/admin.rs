//! Operators: the admin password (argon2, in `admin.json` or
//! `LLM_ROUTER_ADMIN_PASSWORD`), admin tokens, login sessions, the one-time
//! setup link printed while no password is set, and a slow-down for wrong
//! passwords.
//!
//! Sessions live in memory: a restarted coordinator asks operators to log in
//! again, which costs them one login and keeps no session secret on disk.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::secret::{Digest, any_matches, generate_token, write_private_file};

/// File in the data folder holding the password's argon2 hash.
pub const ADMIN_FILE: &str = "admin.json";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "llm_router_session";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Wrong passwords from one address allowed before each next try must wait.
const FREE_FAILURES: u32 = 5;
/// Longest wait imposed between tries.
const MAX_LOCKOUT: Duration = Duration::from_secs(5 * 60);
/// Most sessions kept; the oldest goes first.
const MAX_SESSIONS: usize = 10_000;
/// Most addresses whose failures are remembered.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct AdminFile {
    /// PHC string of the argon2id hash.
    password_argon2: String,
}

/// Why a login did not succeed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoginError {
    #[error("wrong password")]
    WrongPassword,
    #[error("too many wrong passwords from this address; try again in {} s", retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    #[error(
        "no admin password is set yet; open the setup link the coordinator printed at start, or run `llm-router admin set-password`"
    )]
    NoPassword,
}

/// Why the setup link could not set a password.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the setup link is not valid (already used, or from an earlier start)")]
    InvalidToken,
    #[error("the password must have at least {MIN_PASSWORD_LEN} characters")]
    TooShort,
    #[error("the password could not be saved: {0}")]
    Save(String),
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    blocked_until: Option<Instant>,
    last: Option<Instant>,
}

/// Everything that decides whether a request comes from an operator.
#[derive(Debug)]
pub struct Admin {
    path: PathBuf,
    password: RwLock<Option<String>>,
    tokens: Vec<Digest>,
    setup_token: Mutex<Option<Digest>>,
    sessions: Mutex<HashMap<Digest, Instant>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// One argon2 verification at a time: each costs tens of milliseconds of CPU
    /// by design, and a flood of logins must not take the cores from inference.
    verifying: tokio::sync::Semaphore,
}

impl Admin {
    /// The operator settings of `data_dir`; `env_password` (from
    /// `LLM_ROUTER_ADMIN_PASSWORD`) replaces the stored one; `tokens` are admin tokens.
    pub fn open(
        data_dir: &Path,
        env_password: Option<&str>,
        tokens: &[String],
    ) -> anyhow::Result<Self> {
        let path = data_dir.join(ADMIN_FILE);
        let password = match env_password.filter(|p| !p.is_empty()) {
            Some(plain) => Some(hash_password(plain)?),
            None => read_password(&path)?,
        };
        Ok(Self {
            path,
            password: RwLock::new(password),
            tokens: tokens
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(Digest::of)
                .collect(),
            setup_token: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            verifying: tokio::sync::Semaphore::new(1),
        })
    }

    pub fn has_password(&self) -> bool {
        self.password.read().is_some()
    }

    /// A new one-time setup token (the previous one stops working).
    pub fn issue_setup_token(&self) -> String {
        let token = generate_token("");
        *self.setup_token.lock() = Some(Digest::of(&token));
        token
    }

    /// Whether `token` is an admin token.
    pub fn token_valid(&self, token: &str) -> bool {
        !self.tokens.is_empty() && any_matches(&self.tokens, token)
    }

    /// Whether `session` (the cookie's value) is a live session.
    pub fn session_valid(&self, session: &str) -> bool {
        let digest = Digest::of(session);
        let mut sessions = self.sessions.lock();
        match sessions.get(&digest) {
            Some(expires) if *expires > Instant::now() => true,
            Some(_) => {
                sessions.remove(&digest);
                false
            }
            None => false,
        }
    }

    pub fn logout(&self, session: &str) {
        self.sessions.lock().remove(&Digest::of(session));
    }

    /// Checks `password` for a login from `from`; returns a new session.
    pub async fn login(&self, from: IpAddr, password: &str) -> Result<String, LoginError> {
        let now = Instant::now();
        if let Some(until) = self
            .failures
            .lock()
            .get(&from)
            .and_then(|f| f.blocked_until)
            && until > now
        {
            return Err(LoginError::Throttled {
                retry_after: until - now,
            });
        }
        let Some(hash) = self.password.read().clone() else {
            return Err(LoginError::NoPassword);
        };
        let correct = {
            let _turn = self.verifying.acquire().await;
            let password = password.to_owned();
            tokio::task::spawn_blocking(move || verify_password(&hash, &password))
                .await
                .unwrap_or(false)
        };
        if !correct {
            self.record_failure(from);
            return Err(LoginError::WrongPassword);
        }
        self.failures.lock().remove(&from);
        Ok(self.new_session())
    }

    /// Sets the first password with the setup link's token; returns a session.
    pub async fn setup(&self, token: &str, password: &str) -> Result<String, SetupError> {
        let valid = self
            .setup_token
            .lock()
            .as_ref()
            .is_some_and(|d| d.matches(token));
        if !valid || self.has_password() {
            return Err(SetupError::InvalidToken);
        }
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(SetupError::TooShort);
        }
        let plain = password.to_owned();
        let path = self.path.clone();
        let hash = tokio::task::spawn_blocking(move || save_password(&path, &plain))
            .await
            .map_err(|e| SetupError::Save(e.to_string()))?
            .map_err(|e| SetupError::Save(e.to_string()))?;
        *self.password.write() = Some(hash);
        *self.setup_token.lock() = None;
        tracing::info!(path = %self.path.display(), "admin password set through the setup link");
        Ok(self.new_session())
    }

    fn new_session(&self) -> String {
        let session = generate_token("");
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, expires| *expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, e)| **e).map(|(d, _)| *d)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(Digest::of(&session), now + SESSION_TTL);
        session
    }

    /// After [`FREE_FAILURES`] wrong passwords from one address, each next try
    /// waits twice as long as the one before (1 s, 2 s, 4 s… up to five minutes).
    fn record_failure(&self, from: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, f| f.last.is_some_and(|t| now - t < MAX_LOCKOUT));
        }
        let entry = failures.entry(from).or_default();
        entry.count += 1;
        entry.last = Some(now);
        if entry.count >= FREE_FAILURES {
            let doublings = (entry.count - FREE_FAILURES).min(16);
            let wait = Duration::from_secs(1u64 << doublings).min(MAX_LOCKOUT);
            entry.blocked_until = Some(now + wait);
            tracing::warn!(%from, failures = entry.count, wait_secs = wait.as_secs(), "repeated wrong admin passwords; slowing this address down");
        }
    }
}

/// An argon2id hash (PHC string) of `password`, with a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?
        .to_string())
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Stores `password`'s hash in `path` (owner-only); returns the hash.
pub fn save_password(path: &Path, password: &str) -> anyhow::Result<String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        anyhow::bail!("the password must have at least {MIN_PASSWORD_LEN} characters");
    }
    let hash = hash_password(password)?;
    let text = serde_json::to_vec_pretty(&AdminFile {
        password_argon2: hash.clone(),
    })?;
    write_private_file(path, &text)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(hash)
}

fn read_password(path: &Path) -> anyhow::Result<Option<String>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let file: AdminFile = serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid admin file ({e}); set the password again with `llm-router admin set-password`",
            path.display()
        )
    })?;
    PasswordHash::new(&file.password_argon2)
        .map_err(|e| anyhow::anyhow!("{} holds no valid password hash: {e}", path.display()))?;
    Ok(Some(file.password_argon2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(dir: &Path) -> Admin {
        Admin::open(dir, None, &["admin-token".to_owned()]).unwrap()
    }

    #[tokio::test]
    async fn the_setup_link_sets_the_password_once_and_logs_in() {
        let dir = tempfile::tempdir().unwrap();
        let admin = admin(dir.path());
        assert_eq!(
            admin.login("127.0.0.1".parse().unwrap(), "x").await,
            Err(LoginError::NoPassword)
        );
        let token = admin.issue_setup_token();
        assert!(matches!(
            admin.setup(&token, "short").await,
            Err(SetupError::TooShort)
        ));
        let session = admin.setup(&token, "correct horse").await.unwrap();
        assert!(admin.session_valid(&session));
        assert!(matches!(
            admin.setup(&token, "another password").await,
            Err(SetupError::InvalidToken)
        ));
        // The stored hash serves the next start.
        let restarted = Admin::open(dir.path(), None, &[]).unwrap();
        assert!(restarted.has_password());
        let ip = "127.0.0.1".parse().unwrap();
        assert!(restarted.login(ip, "correct horse").await.is_ok());
        assert!(!session.is_empty() && !restarted.session_valid(&session));
    }

    #[tokio::test]
    async fn wrong_passwords_slow_an_address_down_and_logout_ends_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let admin = Admin::open(dir.path(), Some("right password"), &[]).unwrap();
        let attacker: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                admin.login(attacker, "guess").await,
                Err(LoginError::WrongPassword)
            );
        }
        assert!(matches!(
            admin.login(attacker, "right password").await,
            Err(LoginError::Throttled { .. })
        ));
        // Another address is not affected.
        let operator: IpAddr = "10.0.0.2".parse().unwrap();
        let session = admin.login(operator, "right password").await.unwrap();
        assert!(admin.session_valid(&session));
        admin.logout(&session);
        assert!(!admin.session_valid(&session));
    }

    #[test]
    fn admin_tokens_are_checked_and_none_means_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(admin(dir.path()).token_valid("admin-token"));
        assert!(!admin(dir.path()).token_valid("other"));
        assert!(!Admin::open(dir.path(), None, &[]).unwrap().token_valid(""));
    }

    #[test]
    fn a_corrupt_admin_file_is_an_error_that_says_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADMIN_FILE), b"nonsense").unwrap();
        let error = Admin::open(dir.path(), None, &[]).unwrap_err().to_string();
        assert!(error.contains("set-password"), "{error}");
    }
}
