//! Finding the other todoapp binaries: next to the running executable (a
//! release install, or `target/<profile>/`), for test executables one level
//! up (`target/<profile>/deps/..`), else on `PATH`.

use std::path::{Path, PathBuf};

use crate::DevError;

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
