//! Finding the other todoapp binaries: next to the running executable (a
//! release install, or `target/<profile>/`), for test executables one level
//! up (`target/<profile>/deps/..`), else on `PATH`.
//!
//! Under cargo (`cargo test`, `cargo run`) the binaries are built first, with
//! the running executable's profile, so that an edited service is never
//! silently replaced by a stale binary: tests go through [`current`], the
//! stack through [`cargo_build`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::DevError;

/// What [`cargo_build`] builds.
#[derive(Debug, Clone, Copy)]
pub enum Build<'a> {
    /// `--workspace --bins`: what CI builds before `cargo test`, so the
    /// tests' build is a no-op there.
    Workspace,
    /// `--bins -p …` of these packages.
    Packages(&'a [&'a str]),
}

/// Locates binary `name` (see [`locate`]) after building the workspace's
/// binaries once per process when running under cargo. For tests.
pub fn current(name: &str) -> Result<PathBuf, DevError> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            cargo_build(Build::Workspace, Output::OnFailure)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(DevError::Missing)?;
    locate(name)
}

/// Where `cargo build`'s own output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Shown as it comes (an interactive `cargo run`).
    Inherit,
    /// Shown only when the build fails (tests).
    OnFailure,
}

/// Runs `cargo build` for `what` with the profile (and target directory)
/// of the running executable, when it was started by cargo (`CARGO` is
/// set) and `TODOAPP_BIN_DIR` does not name the binaries to use. Returns
/// whether it built.
///
/// Blocks until cargo finishes. It does not deadlock under `cargo test`:
/// cargo releases the build lock before it runs the test executables.
pub fn cargo_build(what: Build<'_>, output: Output) -> Result<bool, DevError> {
    if std::env::var_os("TODOAPP_BIN_DIR").is_some() {
        return Ok(false);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(false);
    };
    let exe = std::env::current_exe().map_err(DevError::io("locating the running executable"))?;
    let Some(place) = BuildPlace::of(&exe) else {
        return Err(DevError::Missing(format!(
            "started by cargo, but {} is not in a cargo target directory: \
             cannot tell which binaries to build (set TODOAPP_BIN_DIR to use prebuilt ones)",
            exe.display()
        )));
    };
    let mut cmd = Command::new(cargo);
    cmd.arg("build").arg("--bins");
    match what {
        Build::Workspace => {
            cmd.arg("--workspace");
        }
        Build::Packages(packages) => {
            for package in packages {
                cmd.arg("-p").arg(package);
            }
        }
    }
    cmd.arg("--profile").arg(&place.profile);
    cmd.arg("--target-dir").arg(&place.target_dir);
    if let Some(triple) = &place.target {
        cmd.arg("--target").arg(triple);
    }
    // Any directory of this workspace selects it.
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let described = format!("{cmd:?}");
    let failed = |detail: String| DevError::Missing(format!("{described} failed: {detail}"));
    match output {
        Output::Inherit => {
            let status = cmd.status().map_err(|e| failed(e.to_string()))?;
            if !status.success() {
                return Err(failed(status.to_string()));
            }
        }
        Output::OnFailure => {
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .map_err(|e| failed(e.to_string()))?;
            if !out.status.success() {
                return Err(failed(format!(
                    "{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
    }
    Ok(true)
}

/// cargo marks the top of its target directory with these files.
fn is_target_dir(dir: &Path) -> bool {
    dir.join("CACHEDIR.TAG").is_file() || dir.join(".rustc_info.json").is_file()
}

/// Where in a cargo target directory an executable lives:
/// `<target-dir>/[<triple>/]<profile-dir>/[deps/]<exe>`.
#[derive(Debug, PartialEq, Eq)]
struct BuildPlace {
    target_dir: PathBuf,
    target: Option<String>,
    /// The cargo profile: `dev` for the `debug` directory (tests too).
    profile: String,
}

impl BuildPlace {
    fn of(exe: &Path) -> Option<Self> {
        let mut dir = exe.parent()?;
        if dir.file_name()? == "deps" {
            dir = dir.parent()?;
        }
        let profile = match dir.file_name()?.to_str()? {
            "debug" => "dev".to_owned(),
            other => other.to_owned(),
        };
        let parent = dir.parent()?;
        if is_target_dir(parent) {
            return Some(Self {
                target_dir: parent.to_path_buf(),
                target: None,
                profile,
            });
        }
        let top = parent.parent()?;
        if is_target_dir(top) {
            return Some(Self {
                target_dir: top.to_path_buf(),
                target: Some(parent.file_name()?.to_str()?.to_owned()),
                profile,
            });
        }
        None
    }
}

pub fn locate(name: &str) -> Result<PathBuf, DevError> {
    if let Some(dir) = std::env::var_os("TODOAPP_BIN_DIR") {
        let candidate = Path::new(&dir).join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(found) = on_path(name) {
        return Ok(found);
    }
    Err(DevError::Missing(format!(
        "cannot find the `{name}` binary next to this program or on PATH (build it with `cargo build --bins`)"
    )))
}

pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_place_follows_the_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::create_dir_all(target.join("x86_64-unknown-linux-gnu/release")).expect("mkdir");
        std::fs::write(target.join("CACHEDIR.TAG"), "").expect("write");

        let place = |exe: &str| BuildPlace::of(&target.join(exe));
        assert_eq!(
            place("debug/deps/system-0123abcd"),
            Some(BuildPlace {
                target_dir: target.clone(),
                target: None,
                profile: "dev".into()
            })
        );
        assert_eq!(
            place("release/todoapp-stack").map(|p| p.profile),
            Some("release".into())
        );
        assert_eq!(
            place("x86_64-unknown-linux-gnu/release/todoapp-stack"),
            Some(BuildPlace {
                target_dir: target.clone(),
                target: Some("x86_64-unknown-linux-gnu".into()),
                profile: "release".into()
            })
        );
        assert_eq!(
            BuildPlace::of(Path::new("/usr/local/bin/todoapp-stack")),
            None
        );
    }
}
