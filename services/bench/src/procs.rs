//! The services' processes as the kernel sees them: which pids belong to a
//! stack (by `/proc/*/cmdline`), their resident memory (`VmRSS`) and CPU
//! time (`/proc/<pid>/stat`), and this process's own CPU use (getrusage).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The service binaries measured, by short name.
pub const SERVICES: [&str; 3] = ["gateway", "user", "todo"];

/// The pids of one stack's processes: `gateway`, `user`, `todo`, and the
/// supervising `stack` (their parent) when found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pids(pub BTreeMap<&'static str, i32>);

/// Whether a process with these arguments is service `name` of the stack in
/// `state_dir`: its program is `todoapp-<name>` and some argument names a
/// path inside the state dir (its `--config <state>/run/<name>.toml`).
pub fn is_service_of(args: &[String], name: &str, state_dir: &str) -> bool {
    let Some(program) = args.first() else {
        return false;
    };
    let file = program.rsplit('/').next().unwrap_or(program);
    file == format!("todoapp-{name}") && args.iter().skip(1).any(|a| a.contains(state_dir))
}

/// `cmdline` bytes (NUL-separated) as arguments.
pub fn split_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Finds the stack's service processes. `state_dir` should be canonical,
/// as the stack writes it into the services' command lines.
pub fn find(state_dir: &Path) -> Pids {
    let needle = state_dir.display().to_string();
    let mut pids = Pids::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args = split_cmdline(&raw);
        for name in SERVICES {
            if is_service_of(&args, name, &needle) {
                pids.0.insert(name, pid);
            }
        }
    }
    // The supervisor: the gateway's parent, if it is a todoapp-stack.
    if let Some(parent) = pids
        .0
        .get("gateway")
        .and_then(|pid| stat(*pid))
        .map(|s| s.ppid)
    {
        let program =
            std::fs::read(format!("/proc/{parent}/cmdline")).map(|raw| split_cmdline(&raw));
        if program.is_ok_and(|args| args.first().is_some_and(|p| p.ends_with("todoapp-stack"))) {
            pids.0.insert("stack", parent);
        }
    }
    pids
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

pub fn rss_kib(pid: i32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        ppid,
        cpu_ticks: utime + stime,
    })
}

pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU time used so far by each process.
pub fn cpu_times(pids: &Pids) -> BTreeMap<&'static str, Duration> {
    let per_tick = 1.0 / ticks_per_second();
    pids.0
        .iter()
        .filter_map(|(name, pid)| {
            stat(*pid).map(|s| {
                (
                    *name,
                    Duration::from_secs_f64(s.cpu_ticks as f64 * per_tick),
                )
            })
        })
        .collect()
}

/// Busy and total CPU time of the whole machine so far, in clock ticks,
/// from the first line of `/proc/stat` (busy: everything but idle and
/// iowait; guest time is already inside user).
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let idle = field(3) + field(4);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Some((busy, busy + idle))
}

/// Busy CPU time of the whole machine so far.
pub fn machine_busy() -> Option<Duration> {
    let (busy, _) = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(Duration::from_secs_f64(busy as f64 / ticks_per_second()))
}

/// This process's user and system CPU time so far.
pub fn own_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rusage, RUSAGE_SELF.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_named_binary_of_this_state_dir() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let gw = args(&[
            "/w/target/release/todoapp-gateway",
            "--config",
            "/tmp/bench-state/run/gateway.toml",
        ]);
        assert!(is_service_of(&gw, "gateway", "/tmp/bench-state"));
        assert!(!is_service_of(&gw, "todo", "/tmp/bench-state"));
        assert!(!is_service_of(&gw, "gateway", "/tmp/other-state"));
        let stack = args(&["todoapp-stack", "--state-dir", "/tmp/bench-state"]);
        assert!(!is_service_of(&stack, "gateway", "/tmp/bench-state"));
        let editor = args(&["vim", "/tmp/bench-state/run/todoapp-gateway"]);
        assert!(!is_service_of(&editor, "gateway", "/tmp/bench-state"));
        assert!(!is_service_of(&[], "gateway", "/tmp/bench-state"));
    }

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(
            split_cmdline(b"a\0--config\0/x y\0"),
            vec!["a", "--config", "/x y"]
        );
        assert!(split_cmdline(b"").is_empty());
    }

    #[test]
    fn parses_vm_rss() {
        let status =
            "Name:\ttodoapp-todo\nVmPeak:\t  100 kB\nVmRSS:\t    12345 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "4242 (tokio (x) rt) S 17 4242 17 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 1000 5000 300";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 17,
                cpu_ticks: 325
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn parses_machine_cpu() {
        let text = "cpu  100 5 50 1000 20 3 2 10 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(parse_proc_stat(text), Some((170, 1190)));
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        assert!(machine_busy().is_some());
    }

    #[test]
    fn own_process_is_visible() {
        let me = std::process::id() as i32;
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        assert!(stat(me).is_some());
        let (user, sys) = own_cpu();
        assert!(user + sys >= Duration::ZERO);
    }
}
