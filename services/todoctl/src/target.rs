//! Where to connect: flags or environment, the profile, else the local
//! stack's `stack.json`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::Global;
use crate::error::{CliError, Result};
use crate::profile::Profile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--gateway`/`--ca` or `TODOCTL_GATEWAY`/`TODOCTL_CA`.
    Explicit,
    Profile,
    /// The local stack's `stack.json` at this path.
    Stack(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Target {
    /// `HOST:PORT`.
    pub gateway: String,
    pub ca: PathBuf,
    pub source: Source,
}

/// What todoctl needs from `stack.json`; other fields are ignored.
#[derive(Debug, Deserialize)]
struct StackJson {
    gateway: String,
    ca_cert: PathBuf,
}

fn default_state_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("todoapp"));
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/todoapp"))
}

/// A stack listening on every address is reached on loopback (the
/// certificate names loopback, not 0.0.0.0).
fn reachable(gateway: &str) -> String {
    match gateway.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            let ip: IpAddr = match addr.ip() {
                IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            };
            SocketAddr::new(ip, addr.port()).to_string()
        }
        _ => gateway.to_owned(),
    }
}

fn read_stack_json(path: &Path) -> Result<Target> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
    let stack: StackJson = serde_json::from_str(&text).map_err(|e| {
        CliError::Other(format!("{}: not a todoapp-stack file: {e}", path.display()))
    })?;
    Ok(Target {
        gateway: reachable(&stack.gateway),
        ca: stack.ca_cert,
        source: Source::Stack(path.to_owned()),
    })
}

pub fn resolve(global: &Global, profile: &Profile) -> Result<Target> {
    if let Some(gateway) = &global.gateway {
        let ca = global.ca.clone().or_else(|| {
            // The profile's CA still applies to the profile's gateway.
            (profile.gateway.as_deref() == Some(gateway.as_str()))
                .then(|| profile.ca.clone())
                .flatten()
        });
        let ca = ca.ok_or_else(|| {
            CliError::Usage(format!(
                "--gateway {gateway}: also give --ca FILE (or TODOCTL_CA), the CA that signed its certificate"
            ))
        })?;
        return Ok(Target {
            gateway: gateway.clone(),
            ca,
            source: Source::Explicit,
        });
    }
    if global.ca.is_some() {
        return Err(CliError::Usage(
            "--ca needs --gateway HOST:PORT (or TODOCTL_GATEWAY)".into(),
        ));
    }
    if let (Some(gateway), Some(ca)) = (&profile.gateway, &profile.ca) {
        return Ok(Target {
            gateway: gateway.clone(),
            ca: ca.clone(),
            source: Source::Profile,
        });
    }
    let Some(state) = default_state_dir() else {
        return Err(CliError::Unavailable(
            "no gateway: pass --gateway HOST:PORT --ca FILE or set TODOCTL_GATEWAY and TODOCTL_CA"
                .into(),
        ));
    };
    let stack_json = state.join("stack.json");
    if !stack_json.exists() {
        return Err(CliError::Unavailable(format!(
            "no gateway: pass --gateway HOST:PORT --ca FILE, set TODOCTL_GATEWAY and TODOCTL_CA, or start a local stack (`todoapp-stack`; no {} now)",
            stack_json.display()
        )));
    }
    read_stack_json(&stack_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_json_with_extra_fields_is_read() {
        let dir = std::env::temp_dir().join(format!("todoctl-target-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("stack.json");
        std::fs::write(
            &path,
            r#"{"gateway":"0.0.0.0:50051","ca_cert":"/s/ca.crt","gateways":["127.0.0.1:50051"],"metrics":{"gateway":"127.0.0.1:9100"}}"#,
        )
        .expect("write");
        let target = read_stack_json(&path).expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(target.gateway, "127.0.0.1:50051");
        assert_eq!(target.ca, PathBuf::from("/s/ca.crt"));
    }

    #[test]
    fn explicit_gateway_needs_a_ca() {
        let global = Global {
            gateway: Some("example.org:443".into()),
            ca: None,
            profile: "default".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        let err = resolve(&global, &Profile::default()).expect_err("no CA");
        assert_eq!(err.exit_code(), 2);
        let profile = Profile {
            gateway: Some("example.org:443".into()),
            ca: Some("/ca.pem".into()),
            ..Profile::default()
        };
        let target = resolve(&global, &profile).expect("profile's CA");
        assert_eq!(target.ca, PathBuf::from("/ca.pem"));
        assert_eq!(target.source, Source::Explicit);
    }
}
