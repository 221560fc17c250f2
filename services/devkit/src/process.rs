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

/// Makes the child run as `account` (its user and group ids, its group as
/// the only supplementary one): for a root parent whose child must not be
/// root. Switching before `exec`, rather than letting the program switch
/// itself (`mariadbd --user`), keeps a [`die_with_parent`] registered after
/// this call in force.
pub fn run_as(cmd: &mut Command, account: &str) -> std::io::Result<()> {
    let (uid, gid) = account_ids(account)?;
    // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid)
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(1, &gid) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// The user and primary group ids of `account`, from the password database.
fn account_ids(account: &str) -> std::io::Result<(libc::uid_t, libc::gid_t)> {
    let name = std::ffi::CString::new(account)
        .map_err(|_| std::io::Error::other(format!("account name {account:?} holds a NUL")))?;
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: every pointer is valid for the call; `buf` outlives it and
    // `entry`'s strings (not read here) point into it.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    if found.is_null() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("there is no `{account}` account on this system"),
        ));
    }
    Ok((entry.pw_uid, entry.pw_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_uid_and_gid_zero() {
        assert_eq!(account_ids("root").expect("root exists"), (0, 0));
    }

    #[test]
    fn an_unknown_account_is_a_clear_error() {
        let e = account_ids("no-such-account-todoapp").expect_err("no such account");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-account-todoapp"), "{e}");
    }
}
