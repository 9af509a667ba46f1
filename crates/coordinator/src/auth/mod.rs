//! Who may do what. Three kinds of callers, each with its own credential:
//! nodes (the fleet's node token to join, then a per-node credential), clients
//! (optional API keys for inference) and operators (a login session or an admin
//! token for the dashboard, management API, history and events). Defaults follow
//! the bind address: loopback-only coordinators are open to their own machine;
//! anything reachable from the network requires all of it.
//!
//! Layout:
//! - [`secret`]: random tokens, their digests, constant-time comparison, owner-only files;
//! - [`node_token`]: the fleet's node token(s);
//! - [`keys`]: client API keys (`keys.json`) with per-key limits;
//! - [`admin`]: the operator password, sessions, the setup link, login slow-down;
//! - [`Access`] (here): all of it as one coordinator runs it, plus the host and
//!   origin rules that keep a web page from acting in an operator's name.
//!
//! The HTTP side (middlewares, login endpoints) is in `crate::api::access`.

pub mod admin;
pub mod keys;
pub mod node_token;
pub mod secret;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use admin::Admin;
use keys::ApiKeys;
use node_token::{NodeTokens, TokenSource};
use secret::Digest;

/// Whether operators must log in (`--admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdminMode {
    /// A login session or an admin token is required.
    Auth,
    /// Anyone who can reach the coordinator may manage it (loopback-only binds).
    Open,
}

/// Access settings as configured (secrets are never printed by `Debug`).
#[derive(Clone, Default)]
pub struct AccessSettings {
    /// Node tokens agents must present; none configured: generated when
    /// [`AccessSettings::generate_node_token`], else open.
    pub node_tokens: Vec<String>,
    pub generate_node_token: bool,
    pub require_api_key: bool,
    /// `None`: open (the library default, for tests and embedding).
    pub admin: Option<AdminMode>,
    pub admin_tokens: Vec<String>,
    /// `LLM_ROUTER_ADMIN_PASSWORD`: replaces the stored password.
    pub admin_password: Option<String>,
    /// Host names the management side answers to besides IP literals, loopback
    /// names and this machine's name (`*` for any, `*.example.com` for a domain).
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the inference API, besides Ollama's defaults.
    pub origins: Vec<String>,
    pub metrics_token: Option<String>,
    /// Cookies are marked `Secure` (the coordinator serves HTTPS).
    pub secure_cookies: bool,
    /// Networks nodes added by URL must be in (`--node-networks`); empty: any.
    pub node_networks: Vec<ipnet::IpNet>,
}

impl fmt::Debug for AccessSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessSettings")
            .field("node_tokens", &self.node_tokens.len())
            .field("generate_node_token", &self.generate_node_token)
            .field("require_api_key", &self.require_api_key)
            .field("admin", &self.admin)
            .field("admin_tokens", &self.admin_tokens.len())
            .field("admin_password", &self.admin_password.is_some())
            .field("allowed_hosts", &self.allowed_hosts)
            .field("origins", &self.origins)
            .field("metrics_token", &self.metrics_token.is_some())
            .field("secure_cookies", &self.secure_cookies)
            .field("node_networks", &self.node_networks)
            .finish()
    }
}

/// What start-up has to tell the person who started the coordinator.
#[derive(Debug, Default)]
pub struct StartNotices {
    /// The node token, when it lives in the data folder (the operator did not choose it).
    pub stored_node_token: Option<String>,
    pub node_token_source: Option<TokenSource>,
    /// The one-time setup token, while no admin password is set.
    pub setup_token: Option<String>,
}

/// Access control as one coordinator runs it. Cheap to share: wrap in an `Arc`.
#[derive(Debug)]
pub struct Access {
    pub node_tokens: NodeTokens,
    pub keys: Arc<ApiKeys>,
    pub require_api_key: bool,
    /// `None`: the management side is open.
    pub admin: Option<Admin>,
    pub hosts: AllowedHosts,
    pub origins: AllowedOrigins,
    pub metrics_token: Option<Digest>,
    pub secure_cookies: bool,
    /// Where nodes added by URL may be; see [`Access::check_node_address`].
    pub node_networks: Vec<ipnet::IpNet>,
    /// The coordinator's own listening address: never a node.
    pub own_addr: Option<std::net::SocketAddr>,
}

impl Access {
    /// Everything open, keys in memory: the library default.
    pub fn open() -> Self {
        Self {
            node_tokens: NodeTokens::default(),
            keys: Arc::new(ApiKeys::in_memory()),
            require_api_key: false,
            admin: None,
            hosts: AllowedHosts::new(&[]),
            origins: AllowedOrigins::new(&[]),
            metrics_token: None,
            secure_cookies: false,
            node_networks: Vec::new(),
            own_addr: None,
        }
    }

    /// Whether a node added by URL may be at `ip:port`: not this coordinator itself
    /// (any loopback or unspecified address, or its bind address, on its port), and
    /// inside `--node-networks` when that is set. The error is the reason.
    pub fn check_node_address(&self, ip: std::net::IpAddr, port: u16) -> Result<(), String> {
        if let Some(own) = self.own_addr
            && port == own.port()
            && (ip.is_loopback()
                || ip.is_unspecified()
                || ip == own.ip()
                || own.ip().is_unspecified() && is_local(ip))
        {
            return Err(format!(
                "{ip}:{port} is this coordinator itself; a node must be another server"
            ));
        }
        if !self.node_networks.is_empty() && !self.node_networks.iter().any(|n| n.contains(&ip)) {
            return Err(format!(
                "{ip} is outside the networks nodes may be in (--node-networks)"
            ));
        }
        Ok(())
    }

    /// Access for a coordinator keeping its data in `data_dir`: reads (or makes)
    /// the node token, the keys and the admin password.
    pub fn start(
        settings: &AccessSettings,
        data_dir: &Path,
    ) -> anyhow::Result<(Self, StartNotices)> {
        use anyhow::Context as _;
        let resolved = NodeTokens::resolve(
            &settings.node_tokens,
            data_dir,
            settings.generate_node_token,
        )
        .with_context(|| {
            format!(
                "cannot read or write the node token file in {}",
                data_dir.display()
            )
        })?;
        let keys = ApiKeys::open(data_dir)?;
        let admin = match settings.admin {
            Some(AdminMode::Auth) => Some(Admin::open(
                data_dir,
                settings.admin_password.as_deref(),
                &settings.admin_tokens,
            )?),
            Some(AdminMode::Open) | None => None,
        };
        let setup_token = admin
            .as_ref()
            .filter(|a| !a.has_password())
            .map(Admin::issue_setup_token);
        let access = Self {
            node_tokens: resolved.tokens,
            keys: Arc::new(keys),
            require_api_key: settings.require_api_key,
            admin,
            hosts: AllowedHosts::new(&settings.allowed_hosts),
            origins: AllowedOrigins::new(&settings.origins),
            metrics_token: settings.metrics_token.as_deref().map(Digest::of),
            secure_cookies: settings.secure_cookies,
            node_networks: settings.node_networks.clone(),
            own_addr: None,
        };
        Ok((
            access,
            StartNotices {
                stored_node_token: resolved.stored_token,
                node_token_source: Some(resolved.source),
                setup_token,
            },
        ))
    }
}

/// Whether `ip` is one of this machine's own addresses (it can be bound).
fn is_local(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// `*` in `pattern` stands for any run of characters.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().expect("split yields at least one part");
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// The `Host` names the management side answers to. DNS rebinding needs a host
/// name the attacker controls, so IP literals and loopback names are always
/// fine; so is this machine's own name. Anything else must be listed.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    patterns: Vec<String>,
}

impl AllowedHosts {
    pub fn new(extra: &[String]) -> Self {
        let mut patterns: Vec<String> = extra
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(name) = machine_host_name() {
            let name = name.to_ascii_lowercase();
            patterns.push(format!("{name}.local"));
            patterns.push(name);
        }
        Self { patterns }
    }

    /// Whether a request whose `Host` header is `host` (with or without a port) may go on.
    pub fn allows(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        name == "localhost"
            || name.ends_with(".localhost")
            || self.patterns.iter().any(|p| glob_matches(p, &name))
    }
}

/// The host of `host[:port]`, IPv6 brackets removed.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// This machine's host name, as the OS tells it.
pub fn machine_host_name() -> Option<String> {
    sysinfo::System::host_name().filter(|n| !n.trim().is_empty())
}

/// Browser origins allowed to call the inference API (CORS): Ollama's defaults
/// (`OLLAMA_ORIGINS`: localhost, 127.0.0.1 and 0.0.0.0 on any port, and the
/// schemes of desktop and editor apps) plus those configured; `*` allows all.
#[derive(Debug, Clone)]
pub struct AllowedOrigins {
    patterns: Vec<String>,
}

const DEFAULT_ORIGIN_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "0.0.0.0"];
const DEFAULT_ORIGIN_SCHEMES: [&str; 5] = [
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
];

impl AllowedOrigins {
    pub fn new(extra: &[String]) -> Self {
        let mut patterns: Vec<String> = extra
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        for host in DEFAULT_ORIGIN_HOSTS {
            for scheme in ["http", "https"] {
                patterns.push(format!("{scheme}://{host}"));
                patterns.push(format!("{scheme}://{host}:*"));
            }
        }
        patterns.extend(DEFAULT_ORIGIN_SCHEMES.map(str::to_owned));
        Self { patterns }
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.patterns.iter().any(|p| glob_matches(p, origin))
    }
}

/// Whether `origin` (an `Origin` header) names the same site as `host` (the
/// `Host` header) — the dashboard calling its own coordinator.
pub fn same_origin(origin: &str, host: &str) -> bool {
    origin.split_once("://").is_some_and(|(scheme, authority)| {
        matches!(scheme, "http" | "https") && authority.eq_ignore_ascii_case(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob_matches("http://localhost:*", "http://localhost:3000"));
        assert!(!glob_matches(
            "http://localhost:*",
            "http://localhost.evil:3000"
        ));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("*.example.com", "a.b.example.com"));
        assert!(!glob_matches("*.example.com", "example.com.evil"));
        assert!(glob_matches("a*b*c", "a-b-c"));
        assert!(!glob_matches("a*b*c", "a-c"));
    }

    #[test]
    fn hosts_allow_ip_literals_loopback_names_and_listed_names_only() {
        let hosts = AllowedHosts::new(&["router.lan".into(), "*.corp.example".into()]);
        for ok in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "localhost:8080",
            "app.localhost",
            "router.lan:8080",
            "gpu.corp.example",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example:8080",
            "router.lan.evil.example",
            "corp.example",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }

    #[test]
    fn default_origins_are_ollamas() {
        let origins = AllowedOrigins::new(&[]);
        for ok in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "app://obsidian.md",
            "vscode-webview://abc",
        ] {
            assert!(origins.allows(ok), "{ok}");
        }
        for refused in [
            "http://evil.example",
            "http://localhost.evil.example",
            "null",
        ] {
            assert!(!origins.allows(refused), "{refused}");
        }
        assert!(
            AllowedOrigins::new(&["https://chat.example".into()]).allows("https://chat.example")
        );
        assert!(AllowedOrigins::new(&["*".into()]).allows("http://evil.example"));
    }

    #[test]
    fn same_origin_compares_the_authority() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!same_origin("http://127.0.0.1:9999", "127.0.0.1:8080"));
        assert!(!same_origin("null", "127.0.0.1:8080"));
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let settings = AccessSettings {
            node_tokens: vec!["node-secret".into()],
            admin_password: Some("pass-secret".into()),
            metrics_token: Some("metrics-secret".into()),
            ..Default::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("secret"), "{printed}");
    }
}
