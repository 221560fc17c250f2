//! Profiles: the token (and optionally where to connect) kept per profile
//! in `$XDG_CONFIG_HOME/todoctl/profiles/NAME.json`, mode 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// What todoctl reads from a token without verifying it (the gateway does).
#[derive(Debug, Deserialize)]
pub struct TokenClaims {
    /// The user's id.
    #[serde(default)]
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl TokenClaims {
    pub fn decode(token: &str) -> Result<Self> {
        let bad = || CliError::Auth("the stored token is malformed: run `todoctl login`".into());
        let payload = token.split('.').nth(1).ok_or_else(bad)?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| bad())?;
        serde_json::from_slice(&json).map_err(|_| bad())
    }
}

pub struct ProfileStore {
    name: String,
    path: PathBuf,
}

fn config_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("todoctl"));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| CliError::Other("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    Ok(PathBuf::from(home).join(".config/todoctl"))
}

impl ProfileStore {
    pub fn open(name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(CliError::Usage(format!(
                "--profile `{name}`: use letters, digits, `-` and `_` (at most 64)"
            )));
        }
        let path = config_dir()?.join("profiles").join(format!("{name}.json"));
        Ok(Self {
            name: name.to_owned(),
            path,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored profile, or an empty one when there is none yet.
    pub fn load(&self) -> Result<Profile> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::Other(format!(
                    "{}: not a todoctl profile ({e}); remove it and log in again",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profile::default()),
            Err(e) => Err(CliError::Other(format!("{}: {e}", self.path.display()))),
        }
    }

    /// Replaces the profile atomically: written to a new file created with
    /// mode 0600 (never readable by others, not even briefly), then renamed.
    pub fn save(&self, profile: &Profile) -> Result<()> {
        let io = |e: std::io::Error| CliError::Other(format!("{}: {e}", self.path.display()));
        let dir = self
            .path
            .parent()
            .ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let tmp = dir.join(format!(".{}.json.{}.tmp", self.name, std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let json = serde_json::to_vec_pretty(profile).map_err(std::io::Error::other)?;
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }

    /// The profile's token when it is still valid; otherwise an
    /// authentication error telling the user to log in.
    pub fn valid_token(&self, profile: &Profile, now: u64) -> Result<String> {
        let login = self.login_hint();
        let token = profile
            .token
            .clone()
            .ok_or_else(|| CliError::Auth(format!("not logged in: run `{login}`")))?;
        let claims = TokenClaims::decode(&token)?;
        if claims.exp <= now {
            return Err(CliError::Auth(format!(
                "your login expired {}: run `{login}` again",
                crate::output::relative_time(claims.exp as i64, now as i64)
            )));
        }
        Ok(token)
    }

    pub fn login_hint(&self) -> String {
        if self.name == "default" {
            "todoctl login".to_owned()
        } else {
            format!("todoctl --profile {} login", self.name)
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_with(payload: &str) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            engine.encode(r#"{"alg":"EdDSA"}"#),
            engine.encode(payload)
        )
    }

    #[test]
    fn decodes_sub_and_exp_without_verifying() {
        let claims = TokenClaims::decode(&token_with(r#"{"sub":"u1","exp":1700000000,"iss":"x"}"#))
            .expect("decode");
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.exp, 1_700_000_000);
    }

    #[test]
    fn malformed_tokens_ask_for_a_login() {
        for token in ["", "abc", "a.!!!.c", &token_with("{}")] {
            let err = TokenClaims::decode(token).expect_err(token);
            assert_eq!(err.exit_code(), 3, "{token}");
        }
    }

    #[test]
    fn expired_token_is_refused_with_exit_3() {
        let store = ProfileStore {
            name: "work".into(),
            path: PathBuf::from("/nonexistent"),
        };
        let profile = Profile {
            token: Some(token_with(r#"{"sub":"u","exp":1000}"#)),
            ..Profile::default()
        };
        let err = store.valid_token(&profile, 1000).expect_err("expired");
        assert_eq!(err.exit_code(), 3);
        assert!(
            err.message().contains("todoctl --profile work login"),
            "{err}"
        );
        assert!(store.valid_token(&profile, 999).is_ok());
    }

    #[test]
    fn profile_names_are_checked() {
        for bad in ["", "../x", "a/b", "a b"] {
            assert_eq!(
                ProfileStore::open(bad).err().map(|e| e.exit_code()),
                Some(2),
                "{bad}"
            );
        }
    }
}
