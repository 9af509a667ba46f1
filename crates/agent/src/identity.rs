//! Who this machine is to the coordinator: its name and the address it advertises.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use llm_router_common::MAX_NAME_LEN;
use reqwest::Url;

/// Environment variables consulted for the machine name, most specific first.
pub const MACHINE_NAME_ENV_VARS: [&str; 2] = ["OLLAMA_AGENT_MACHINE_NAME", "OLLAMA_MACHINE_NAME"];

/// Picks the machine name, first non-blank value wins (trimmed, cut to [`MAX_NAME_LEN`]):
///
/// 1. `explicit` (`--machine-name`),
/// 2. `OLLAMA_AGENT_MACHINE_NAME`, then `OLLAMA_MACHINE_NAME`,
/// 3. `settings_file` (`machine_name` in `agent-settings.json`),
/// 4. `HOSTNAME`,
/// 5. the OS host name.
///
/// The settings file sits above `HOSTNAME` because the latter is ambient (shells and
/// containers set it on their own), while a name in the file is an operator's choice.
/// `env` looks up one environment variable; passing it in keeps this testable.
pub fn resolve_machine_name(
    explicit: Option<&str>,
    settings_file: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    os_host_name: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let non_blank = |value: Option<String>| {
        value
            .map(|value| value.trim().chars().take(MAX_NAME_LEN).collect::<String>())
            .filter(|value| !value.is_empty())
    };
    non_blank(explicit.map(str::to_owned))
        .or_else(|| {
            MACHINE_NAME_ENV_VARS
                .iter()
                .find_map(|name| non_blank(env(name)))
        })
        .or_else(|| non_blank(settings_file.map(str::to_owned)))
        .or_else(|| non_blank(env("HOSTNAME")))
        .or_else(|| non_blank(os_host_name()))
}

/// Why the advertised address could not be found.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiseIpError {
    #[error("the coordinator URL {0} has no host")]
    NoHost(Url),
    #[error("cannot resolve the coordinator host {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("the coordinator host {0} resolves to no address")]
    NoAddress(String),
    #[error("no local route to the coordinator at {addr}: {source}")]
    NoRoute { addr: SocketAddr, source: io::Error },
}

/// The local address of the interface that routes to the coordinator.
///
/// Connecting a UDP socket sends nothing; it only asks the kernel to pick a route and
/// hence a source address. A coordinator on loopback yields `127.0.0.1`.
pub async fn route_local_ip(coordinator_url: &Url) -> Result<IpAddr, AdvertiseIpError> {
    let host = coordinator_url
        .host_str()
        .ok_or_else(|| AdvertiseIpError::NoHost(coordinator_url.clone()))?;
    let port = coordinator_url.port_or_known_default().unwrap_or(80);
    // `host_str` keeps the brackets of an IPv6 literal; `lookup_host` wants them off.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare_host, port))
        .await
        .map_err(|source| AdvertiseIpError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut last_error = None;
    for addr in &addrs {
        match local_ip_towards(*addr) {
            Ok(ip) => return Ok(ip),
            Err(source) => {
                last_error = Some(AdvertiseIpError::NoRoute {
                    addr: *addr,
                    source,
                })
            }
        }
    }
    Err(last_error.unwrap_or_else(|| AdvertiseIpError::NoAddress(host.to_owned())))
}

fn local_ip_towards(target: SocketAddr) -> io::Result<IpAddr> {
    let unspecified: IpAddr = match target {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((unspecified, 0))?;
    socket.connect(target)?;
    let ip = socket.local_addr()?.ip();
    if ip.is_unspecified() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "the kernel chose no source address",
        ));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn os_host() -> Option<String> {
        Some("os-host".to_owned())
    }

    #[test]
    fn machine_name_follows_the_documented_precedence() {
        let full = [
            ("OLLAMA_AGENT_MACHINE_NAME", "agent-name"),
            ("OLLAMA_MACHINE_NAME", "ollama-name"),
            ("HOSTNAME", "env-host"),
        ];
        let name = |explicit, file, env: &[(&str, &str)]| {
            resolve_machine_name(explicit, file, env_of(env), os_host)
        };
        assert_eq!(
            name(Some("flag"), Some("file"), &full).as_deref(),
            Some("flag")
        );
        assert_eq!(
            name(None, Some("file"), &full).as_deref(),
            Some("agent-name")
        );
        assert_eq!(
            name(None, Some("file"), &full[1..]).as_deref(),
            Some("ollama-name")
        );
        assert_eq!(
            name(None, Some("file"), &full[2..]).as_deref(),
            Some("file")
        );
        assert_eq!(name(None, None, &full[2..]).as_deref(), Some("env-host"));
        assert_eq!(name(None, None, &[]).as_deref(), Some("os-host"));
    }

    #[test]
    fn machine_name_skips_blank_values_and_trims() {
        let env = env_of(&[
            ("OLLAMA_AGENT_MACHINE_NAME", "   "),
            ("OLLAMA_MACHINE_NAME", ""),
            ("HOSTNAME", "  gpu-box-7 \n"),
        ]);
        assert_eq!(
            resolve_machine_name(Some(" "), Some("\t"), env, os_host).as_deref(),
            Some("gpu-box-7")
        );
    }

    #[test]
    fn machine_name_is_none_when_nothing_is_known() {
        assert_eq!(resolve_machine_name(None, None, env_of(&[]), || None), None);
        assert_eq!(
            resolve_machine_name(None, None, env_of(&[]), || Some(" ".to_owned())),
            None
        );
    }

    #[test]
    fn machine_name_is_cut_to_the_maximum_length() {
        let long = "x".repeat(MAX_NAME_LEN + 10);
        let name = resolve_machine_name(Some(&long), None, env_of(&[]), os_host).unwrap();
        assert_eq!(name.chars().count(), MAX_NAME_LEN);
    }

    #[tokio::test]
    async fn a_loopback_coordinator_is_reached_from_loopback() {
        let url = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            route_local_ip(&url).await.unwrap(),
            IpAddr::from(Ipv4Addr::LOCALHOST)
        );
    }

    #[tokio::test]
    async fn localhost_by_name_resolves_to_a_loopback_address() {
        let url = Url::parse("http://localhost:8080").unwrap();
        assert!(route_local_ip(&url).await.unwrap().is_loopback());
    }

    #[tokio::test]
    async fn an_unresolvable_coordinator_host_is_an_error() {
        let url = Url::parse("http://no-such-host.invalid:8080").unwrap();
        let error = route_local_ip(&url).await.unwrap_err();
        assert!(matches!(error, AdvertiseIpError::Resolve { .. }), "{error}");
    }
}
