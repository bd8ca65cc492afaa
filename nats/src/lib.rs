//! depot queues in NATS JetStream, so that any number of depot managers serve the same queues
//! as stateless gateways: `depot serve --backend nats://HOST:PORT[,HOST:PORT…]`.
//!
//! A manager given [`backend`] (see `depot_std::ManagerBuilder::backend`) keeps every queue in
//! a JetStream work-queue stream; authentication, rights and limits stay the manager's. A
//! small NATS client of its own ([`conn`]) talks to the servers: no async runtime, one reader
//! and one writer thread, reconnection across the server list, TLS ([`tls`], cargo feature
//! `tls`) and nkey or `.creds` credentials ([`nkeys`], cargo feature `nkeys`).
//!
//! See SCALING.md for when to use it and what it guarantees.

pub mod conn;
pub mod jetstream;
pub mod nkeys;
pub mod tls;

use std::sync::Arc;

pub use conn::Auth;
use depot_std::backend::StartBackend;
pub use jetstream::JetStreamOptions;
pub use nkeys::UserKey;
pub use tls::TlsConfig;

/// A backend URL, read: its servers, the credentials it names, and whether it asks for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// `host:port` of each server.
    pub servers: Vec<String>,
    /// Credentials in the URL.
    pub auth: Auth,
    /// `tls://`: TLS to every server.
    pub tls: bool,
}

/// Reads `nats://…` (as [`parse_url`]) or `tls://…` (the same, with TLS to every server).
pub fn parse_backend_url(url: &str) -> Result<BackendUrl, String> {
    let (tls, rest) = match url.strip_prefix("tls://") {
        Some(rest) => (true, format!("nats://{rest}")),
        None => (false, url.to_owned()),
    };
    let (servers, auth) = parse_url(&rest).map_err(|e| e.replace(&rest, url))?;
    Ok(BackendUrl { servers, auth, tls })
}

/// The servers and credentials of `nats://[user:password@]host:port[,host:port…]` (or
/// `nats://token@host:port`); the port defaults to 4222.
pub fn parse_url(url: &str) -> Result<(Vec<String>, Auth), String> {
    let rest = url
        .strip_prefix("nats://")
        .ok_or_else(|| format!("'{url}': a NATS backend is nats://HOST:PORT[,HOST:PORT…]"))?;
    let mut auth = Auth::None;
    let mut servers = Vec::new();
    for part in rest.split(',') {
        let part = part
            .trim()
            .trim_start_matches("nats://")
            .trim_start_matches("tls://");
        let host = match part.rsplit_once('@') {
            Some((cred, host)) => {
                auth = match cred.split_once(':') {
                    Some((user, pass)) => Auth::UserPass(user.into(), pass.into()),
                    None => Auth::Token(cred.into()),
                };
                host
            }
            None => part,
        };
        let host = host.trim_end_matches('/');
        if host.is_empty() {
            return Err(format!("'{url}': an empty server address"));
        }
        servers.push(if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:4222")
        });
    }
    Ok((servers, auth))
}

/// Credentials from a file: a NATS `.creds` file (a user JWT and its nkey seed, as `nsc`
/// writes them), or `key: value` (or `key=value`) lines: `user` and `password`, or `token`
/// (lines starting with `#` are comments).
pub fn read_creds(path: &std::path::Path) -> Result<Auth, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let auth = if text.contains("-----BEGIN NATS USER JWT-----") {
        nkeys::parse_creds_file(&text).map(|(jwt, key)| Auth::Jwt(jwt, key))
    } else {
        parse_creds(&text)
    };
    auth.map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_creds(text: &str) -> Result<Auth, String> {
    let (mut user, mut pass, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .or_else(|| line.split_once('='))
            .ok_or("expected `key: value` lines (user, password, token)")?;
        let value = value.trim().trim_matches('"').to_string();
        match key.trim() {
            "user" => user = Some(value),
            "password" | "pass" => pass = Some(value),
            "token" => token = Some(value),
            other => return Err(format!("unknown key '{other}' (user, password, token)")),
        }
    }
    match (user, pass, token) {
        (Some(u), Some(p), None) => Ok(Auth::UserPass(u, p)),
        (None, None, Some(t)) => Ok(Auth::Token(t)),
        _ => Err("give `user` and `password`, or `token`".into()),
    }
}

/// The starter to give `depot_std::ManagerBuilder::backend("nats", …)`.
pub fn backend(opts: JetStreamOptions) -> Arc<StartBackend> {
    Arc::new(move |link, queues| jetstream::start(opts.clone(), link, queues))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_servers_and_credentials() {
        let (servers, auth) = parse_url("nats://a:1,b:2,c").unwrap();
        assert_eq!(servers, ["a:1", "b:2", "c:4222"]);
        assert_eq!(auth, Auth::None);
        let (_, auth) = parse_url("nats://u:p@a:1").unwrap();
        assert_eq!(auth, Auth::UserPass("u".into(), "p".into()));
        let (_, auth) = parse_url("nats://tok@a:1").unwrap();
        assert_eq!(auth, Auth::Token("tok".into()));
        assert!(parse_url("http://a:1").is_err());
        assert!(parse_url("nats://a:1,,b:2").is_err());
        let url = parse_backend_url("tls://u:p@a:1,b").unwrap();
        assert_eq!(url.servers, ["a:1", "b:4222"]);
        assert!(url.tls);
        assert_eq!(url.auth, Auth::UserPass("u".into(), "p".into()));
        assert!(!parse_backend_url("nats://a").unwrap().tls);
        assert!(parse_backend_url("tcp://a")
            .unwrap_err()
            .contains("tcp://a"));
    }

    #[test]
    fn creds_files_give_user_and_password_or_token() {
        assert_eq!(
            parse_creds("# gateway\nuser: depot\npassword = \"s3cret\"\n").unwrap(),
            Auth::UserPass("depot".into(), "s3cret".into())
        );
        assert_eq!(
            parse_creds("token: abc").unwrap(),
            Auth::Token("abc".into())
        );
        assert!(parse_creds("user: x").is_err());
        assert!(parse_creds("nkey: x").is_err());
    }
}
