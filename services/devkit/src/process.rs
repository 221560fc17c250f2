//! Child processes that do not outlive whoever started them.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child receive `signal` when the thread that spawns it ends
/// (Linux `PR_SET_PDEATHSIG`), so a parent killed with SIGKILL leaves no
/// orphan behind. The kernel ties this to the spawning *thread*, not the
/// process: spawn from a thread that lives as long as the child should.
/// The setting survives `exec`, but not a change of user id (a server that
/// switches to another account drops it).
pub fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the parent exited during the start"));
            }
            Ok(())
        });
    }
}
