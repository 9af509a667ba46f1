//! Starting at login: a login item (macOS), a `Run` key (Windows) or a
//! `~/.config/autostart` entry (Linux desktops), written by `auto-launch`.
//!
//! What is recorded is the program and the flags it was given when the entry
//! was installed, less the one-off actions and the secrets: a login entry is
//! readable by other programs, so a node token belongs in the settings file.

use std::path::Path;

/// Flags that are never recorded, with whether they take a value.
const SECRET_FLAGS: [&str; 2] = ["--node-token", "--node-api-key"];
const ONE_OFF_FLAGS: [&str; 4] = [
    "--install-autostart",
    "--remove-autostart",
    "--print-config",
    "--check-config",
];

/// The arguments to record from `args` (without the program name), and the
/// secret flags left out.
pub fn recorded_args(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let flag = arg.split('=').next().unwrap_or(arg);
        if ONE_OFF_FLAGS.contains(&flag) {
            continue;
        }
        if SECRET_FLAGS.contains(&flag) {
            dropped.push(flag.to_owned());
            skip_value = !arg.contains('=');
            continue;
        }
        kept.push(quoted(arg));
    }
    (kept, dropped)
}

/// `arg` as one word of a login entry's command line.
fn quoted(arg: &str) -> String {
    if arg.is_empty() || arg.contains(char::is_whitespace) || arg.contains('"') {
        format!("\"{}\"", arg.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        arg.to_owned()
    }
}

fn entry(name: &str, exe: &Path, args: &[String]) -> Result<auto_launch::AutoLaunch, String> {
    let exe = exe
        .to_str()
        .ok_or_else(|| format!("the program's path {} is not valid UTF-8", exe.display()))?;
    auto_launch::AutoLaunchBuilder::new()
        .set_app_name(name)
        .set_app_path(exe)
        .set_args(args)
        .set_use_launch_agent(true)
        .build()
        .map_err(|e| format!("cannot describe the login entry: {e}"))
}

/// Makes `exe` start at login with `args` (already chosen by
/// [`recorded_args`]), under `name`.
pub fn install(name: &str, exe: &Path, args: &[String]) -> Result<(), String> {
    if cfg!(target_os = "linux") {
        // auto-launch creates only the last folder of ~/.config/autostart.
        if let Some(home) = std::env::var_os("HOME") {
            let dir = Path::new(&home).join(".config").join("autostart");
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    entry(name, exe, args)?
        .enable()
        .map_err(|e| format!("cannot install the login entry: {e}"))
}

/// Removes the login entry `name`; `Ok(false)` when there was none.
pub fn remove(name: &str, exe: &Path) -> Result<bool, String> {
    let entry = entry(name, exe, &[])?;
    let was = entry.is_enabled().unwrap_or(true);
    entry
        .disable()
        .map_err(|e| format!("cannot remove the login entry: {e}"))?;
    Ok(was)
}

/// Where the entry lives, for the user.
pub fn location(name: &str) -> String {
    if cfg!(target_os = "linux") {
        format!("~/.config/autostart/{name}.desktop")
    } else if cfg!(target_os = "macos") {
        format!("~/Library/LaunchAgents/{name}.plist")
    } else {
        format!("the Run key of HKEY_CURRENT_USER, as {name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn secrets_and_one_off_flags_are_not_recorded() {
        let (kept, dropped) = recorded_args(&strings(&[
            "--install-autostart",
            "--coordinator-url",
            "http://c:8080",
            "--node-token",
            "llmr_nt_secret",
            "--node-api-key=key",
            "--machine-name",
            "Gaming PC",
        ]));
        assert_eq!(
            kept,
            [
                "--coordinator-url",
                "http://c:8080",
                "--machine-name",
                "\"Gaming PC\""
            ]
        );
        assert_eq!(dropped, ["--node-token", "--node-api-key"]);
    }
}
