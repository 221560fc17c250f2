//! Tests never run a stale binary: the shared helper the tests locate
//! binaries through (`todoapp_devkit::bins::current`) builds the
//! workspace's binaries, with this executable's profile, first.
//!
//! Its own test executable, because it briefly replaces a binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use todoapp_devkit::bins::{self, Build, Output};

fn version(binary: &std::path::Path) -> String {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .expect("run --version");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_build_helper_replaces_a_stale_binary_with_the_current_one() {
    // todoapp-bench: no other test executable of this package runs it.
    let bench = bins::current("todoapp-bench").expect("build and locate todoapp-bench");
    assert!(version(&bench).starts_with("todoapp-bench "));

    // A binary left over from before an edit. Replace the file rather than
    // write through it: cargo hard-links it to its own build output.
    std::fs::remove_file(&bench).expect("remove");
    std::fs::write(&bench, "#!/bin/sh\necho stale\n").expect("write stand-in");
    std::fs::set_permissions(&bench, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(version(&bench), "stale\n");

    let built = bins::cargo_build(Build::Workspace, Output::OnFailure).expect("cargo build");
    assert!(
        built,
        "run this under `cargo test`: the helper builds only when started by cargo"
    );
    assert!(
        version(&bench).starts_with("todoapp-bench "),
        "still stale after the helper's build: {}",
        version(&bench)
    );
}
