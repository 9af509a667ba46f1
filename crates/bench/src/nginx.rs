//! A private nginx as a plain reverse proxy in front of the mock node, set up
//! as a user would put one in front of Ollama: upstream keep-alive, HTTP/1.1
//! to the node, no buffering (so streams pass as they come), no access log.
//!
//! Its listening socket is bound here (port 0) and handed to nginx through
//! its `NGINX` environment variable, the way nginx passes sockets on to a new
//! binary; so no port is guessed. Its files live in a temporary folder and it
//! is stopped (SIGQUIT to the master, then SIGKILL) when dropped.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// Where nginx is looked for when no path is given.
const CANDIDATES: [&str; 3] = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];

/// The nginx binary to use: `given`, else the first one found on `PATH` or
/// in the usual places.
pub fn find(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(CANDIDATES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// A running nginx.
pub struct Nginx {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts `binary` proxying everything to `upstream` (`host:port`), with
    /// `keepalive` idle connections kept to it.
    pub fn start(binary: &Path, upstream: &str, keepalive: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        // nginx takes an inherited socket as it is: a blocking one would
        // leave a worker stuck in accept() when another took the connection.
        listener.set_nonblocking(true)?;
        // dup() gives a copy without close-on-exec, so nginx inherits it.
        let inherited: OwnedFd = rustix::io::dup(&listener)?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            config(dir.path(), &addr.to_string(), upstream, keepalive),
        )?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .env("NGINX", format!("{};", inherited.as_raw_fd()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        // nginx holds its own copies now.
        drop(inherited);
        drop(listener);
        Ok(Self {
            child,
            base: format!("http://{addr}"),
            dir,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What nginx wrote to its error log, for a failure's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// `Some(why)` when nginx has already exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("nginx exited ({status}): {}", self.log())),
            _ => None,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            // Graceful: the master stops its workers before it exits.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration: one server, everything to one upstream.
fn config(dir: &Path, listen: &str, upstream: &str, keepalive: usize) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream node {{
        server {upstream};
        keepalive {keepalive};
    }}
    server {{
        listen {listen};
        client_max_body_size 64m;
        location / {{
            proxy_pass http://node;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_keeps_upstream_connections_alive_and_does_not_buffer() {
        let conf = config(Path::new("/tmp/x"), "127.0.0.1:4000", "127.0.0.1:5000", 64);
        for line in [
            "listen 127.0.0.1:4000;",
            "server 127.0.0.1:5000;",
            "keepalive 64;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_buffering off;",
            "pid /tmp/x/nginx.pid;",
        ] {
            assert!(conf.contains(line), "{line} missing from\n{conf}");
        }
    }

    #[test]
    fn a_given_path_is_used_as_it_is() {
        let given = Path::new("/opt/nginx/sbin/nginx");
        assert_eq!(find(Some(given)).as_deref(), Some(given));
    }
}
