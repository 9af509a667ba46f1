//! The subcommands of `llm-router` besides running the coordinator: `keys`
//! (on the data folder, or on a running coordinator with `--url`),
//! `admin set-password`, and the fleet's models and nodes ([`fleet`]: `models`,
//! `pull`, `rm`, `nodes`).

pub mod fleet;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};

use crate::auth::admin::{ADMIN_FILE, MIN_PASSWORD_LEN, save_password};
use crate::auth::keys::{ApiKeys, KeyInfo, KeyLimits};
use crate::config::{AdminAction, Command, KeysAction, ProxySettings};

/// Runs `command` with data in `data_dir`; output goes to stdout. Answers the
/// process's exit status.
pub async fn run(command: Command, data_dir: &Path) -> anyhow::Result<u8> {
    let done = |result: anyhow::Result<()>| result.map(|()| fleet::SUCCESS);
    match command {
        Command::Keys {
            action,
            url: Some(url),
            admin_token,
        } => done(keys_remote(action, &url, admin_token.as_deref()).await),
        Command::Keys { action, .. } => done(keys_local(action, data_dir)),
        Command::Admin {
            action: AdminAction::SetPassword,
        } => done(set_password(data_dir)),
        Command::Models { remote } => fleet::models(&remote).await,
        Command::Nodes { remote } => fleet::nodes(&remote).await,
        Command::Pull {
            model,
            nodes,
            count,
            all,
            remote,
        } => fleet::pull(&remote, &model, nodes, count, all).await,
        Command::Rm {
            model,
            nodes,
            remote,
        } => fleet::rm(&remote, &model, nodes).await,
    }
}

fn keys_local(action: KeysAction, data_dir: &Path) -> anyhow::Result<()> {
    let keys = ApiKeys::open(data_dir)?;
    match action {
        KeysAction::Create {
            name,
            rpm,
            max_concurrent,
        } => {
            let limits = KeyLimits {
                requests_per_minute: rpm,
                max_concurrent,
            };
            let (key, _) = keys.create(&name, limits)?;
            print_created(&name, &key);
            println!(
                "(stored as a digest in {}; a running coordinator picks it up within seconds)",
                keys.path().display()
            );
        }
        KeysAction::List => print_keys(&keys.list()),
        KeysAction::Revoke { name } => {
            keys.revoke(&name)?;
            println!("key {name:?} revoked");
        }
    }
    Ok(())
}

async fn keys_remote(action: KeysAction, url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let base = url.trim_end_matches('/');
    match action {
        KeysAction::Create {
            name,
            rpm,
            max_concurrent,
        } => {
            let body = json!({ "name": name, "requests_per_minute": rpm, "max_concurrent": max_concurrent });
            let created = call(
                hyper::Method::POST,
                &format!("{base}/api/keys"),
                token,
                Some(body),
            )
            .await?;
            let key = created["key"]
                .as_str()
                .context("the coordinator sent no key")?;
            print_created(&name, key);
        }
        KeysAction::List => {
            let listed = call(hyper::Method::GET, &format!("{base}/api/keys"), token, None).await?;
            let keys: Vec<KeyInfo> =
                serde_json::from_value(listed).context("unexpected answer to GET /api/keys")?;
            print_keys(&keys);
        }
        KeysAction::Revoke { name } => {
            let path = format!("{base}/api/keys/{}", encode_path_segment(&name));
            call(hyper::Method::DELETE, &path, token, None).await?;
            println!("key {name:?} revoked");
        }
    }
    Ok(())
}

fn print_created(name: &str, key: &str) {
    println!("API key {name:?} created. It is shown only this once:\n\n    {key}\n");
}

fn print_keys(keys: &[KeyInfo]) {
    if keys.is_empty() {
        println!("no API keys");
        return;
    }
    println!("{:<24} {:<14} {:<25} LIMITS", "NAME", "PREFIX", "CREATED");
    for key in keys {
        let mut limits = Vec::new();
        if let Some(rpm) = key.limits.requests_per_minute {
            limits.push(format!("{rpm}/min"));
        }
        if let Some(n) = key.limits.max_concurrent {
            limits.push(format!("{n} at once"));
        }
        println!(
            "{:<24} {:<14} {:<25} {}",
            key.name,
            format!("{}…", key.prefix),
            key.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            if limits.is_empty() {
                "none".to_owned()
            } else {
                limits.join(", ")
            }
        );
    }
}

/// Key names are letters, digits and `._-`; anything else is escaped anyway.
fn encode_path_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One JSON call to a running coordinator's management API.
async fn call(
    method: hyper::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let client = crate::proxy::upstream_client(&ProxySettings::default())?;
    let mut request = hyper::Request::builder()
        .method(method.clone())
        .uri(url)
        .header("accept", "application/json")
        .header("x-requested-with", "llm-router-cli");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let payload = match &body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(body)?)
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .with_context(|| format!("{url:?} is not a usable URL"))?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let answer: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes) }))
    };
    if !status.is_success() {
        let message = answer["error"].as_str().unwrap_or("no message");
        if status == hyper::StatusCode::UNAUTHORIZED {
            bail!("{method} {url}: {message} (pass --admin-token or set LLM_ROUTER_ADMIN_TOKEN)");
        }
        bail!("{method} {url} answered {status}: {message}");
    }
    Ok(answer)
}

/// Asks for the password twice on a terminal (without echo), or reads one line from stdin.
fn set_password(data_dir: &Path) -> anyhow::Result<()> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New admin password: ")?;
        let again = rpassword::prompt_password("Repeat it: ")?;
        if first != again {
            bail!("the two passwords differ; nothing was changed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.chars().count() < MIN_PASSWORD_LEN {
        bail!("the password must have at least {MIN_PASSWORD_LEN} characters; nothing was changed");
    }
    let path = data_dir.join(ADMIN_FILE);
    save_password(&path, &password)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "admin password stored (argon2 hash) in {}; a running coordinator uses it after a restart",
        path.display()
    )?;
    Ok(())
}
