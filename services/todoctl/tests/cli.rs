//! `todoctl` driven as a person or a script would, against a real local
//! stack found through its `stack.json`.

mod support;

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::{mode, stack, unique, Home, Stack};

const PASSWORD: &str = "correct horse battery";

fn the_stack() -> &'static Stack {
    stack(&[])
}

fn entries(home: &Home) -> Vec<serde_json::Value> {
    let run = home.run(&["ls", "--json"]).ok();
    run.json().as_array().expect("a JSON array").clone()
}

fn entry(home: &Home, id: &str) -> serde_json::Value {
    home.run(&["show", id, "--json"]).ok().json()
}

#[test]
fn register_login_add_ls_done_edit_rm_through_stack_json() {
    let home = Home::new(the_stack());
    let user = unique("ann");
    home.register(&user, PASSWORD);

    // The token is kept in the profile, private to the user, with no
    // temporary file left behind.
    let profile = home.config_dir().join("profiles/default.json");
    assert_eq!(mode(&profile), 0o600);
    assert_eq!(mode(profile.parent().expect("dir")), 0o700);
    let names: Vec<_> = std::fs::read_dir(profile.parent().expect("dir"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec!["default.json"]);

    home.run(&["logout"]).ok();
    home.run(&["ls"])
        .fails(3, "not logged in: run `todoctl login`");
    home.run_stdin(
        &["login", &user, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )
    .ok();

    let whoami = home.run(&["whoami"]).ok().stdout;
    assert!(
        whoami.contains(&format!("user:    {user} (id ")),
        "{whoami}"
    );
    assert!(whoami.contains("local stack"), "{whoami}");
    assert!(
        whoami.contains("expires: in 59 minutes (") || whoami.contains("expires: in 1 hour ("),
        "{whoami}"
    );

    let milk = home
        .run(&["add", "buy milk", "--text", "2 litres"])
        .ok()
        .stdout;
    let milk = milk.trim().to_owned();
    let call = home.run(&["add", "call mom"]).ok().stdout.trim().to_owned();
    assert!(milk.parse::<i32>().is_ok() && call.parse::<i32>().is_ok());

    let listed = entries(&home);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"].to_string(), milk);
    assert_eq!(listed[0]["title"], "buy milk");
    assert_eq!(listed[0]["text"], "2 litres");
    assert_eq!(listed[0]["done"], false);
    assert!(listed[0]["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    home.run(&["done", &milk, &call]).ok();
    let jsonl = home.run(&["ls", "--jsonl"]).ok().stdout;
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|e| e["done"] == true), "{jsonl}");
    home.run(&["undone", &call]).ok();
    assert_eq!(entry(&home, &call)["done"], false);
    assert_eq!(entry(&home, &milk)["done"], true);

    home.run(&["edit", &call, "--title", "call mum"]).ok();
    let edited = entry(&home, &call);
    assert_eq!(edited["title"], "call mum");
    assert_eq!(edited["text"], "");
    home.run(&["edit", &milk, "--text", "3 litres"]).ok();
    let edited = entry(&home, &milk);
    assert_eq!(
        (edited["title"].as_str(), edited["text"].as_str()),
        (Some("buy milk"), Some("3 litres"))
    );
    assert_eq!(edited["done"], true, "editing keeps done");

    let table = home.run(&["ls"]).ok().stdout;
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("ID  DONE  TITLE"), "{table}");
    assert!(
        rows[1].contains(" yes ") && rows[1].contains("buy milk"),
        "{table}"
    );
    // Created and updated moments ago, as relative times.
    assert_eq!(
        rows[1].matches("just now").count() + rows[1].matches("seconds ago").count(),
        2,
        "{table}"
    );
    let shown = home.run(&["show", &milk]).ok().stdout;
    assert!(
        shown.contains("title:   buy milk") && shown.contains("  3 litres"),
        "{shown}"
    );

    home.run(&["rm", &milk]).ok();
    let left = entries(&home);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["title"], "call mum");
}

#[test]
fn ls_follows_page_tokens_with_all() {
    let home = Home::new(the_stack());
    home.register(&unique("pages"), PASSWORD);
    for n in 0..5 {
        home.run(&["add", &format!("entry {n}")]).ok();
    }
    // A reader that stops early is no error.
    let mut piped = home.command(&["ls"]);
    piped.stdout(std::process::Stdio::piped());
    let mut child = piped.spawn().expect("todoctl ls");
    drop(child.stdout.take());
    assert!(child.wait().expect("wait").success());

    let first = home.run(&["ls", "--limit", "2", "--json"]).ok();
    assert_eq!(first.json().as_array().map(Vec::len), Some(2));
    assert!(
        first.stderr.contains("todoctl ls --all"),
        "{}",
        first.stderr
    );
    let all = home.run(&["ls", "--all", "--limit", "2", "--json"]).ok();
    let titles: Vec<String> = all
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        titles,
        (0..5).map(|n| format!("entry {n}")).collect::<Vec<_>>()
    );
    assert!(all.stderr.is_empty(), "{}", all.stderr);
}

#[test]
fn wrong_password_exits_3() {
    let home = Home::new(the_stack());
    let user = unique("bob");
    home.register(&user, PASSWORD);
    home.run(&["logout"]).ok();
    home.run_stdin(&["login", &user, "--password-stdin"], "not the password\n")
        .fails(3, "login: ");
    home.run(&["whoami"]).fails(3, "not logged in");
}

#[test]
fn a_token_the_gateway_refuses_exits_3() {
    let home = Home::new(the_stack());
    home.register(&unique("mallory"), PASSWORD);
    let path = home.config_dir().join("profiles/default.json");
    let mut profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("profile")).expect("json");
    // Same claims (not expired), another signature.
    let token = profile["token"].as_str().expect("token").to_owned();
    let (signed, _) = token.rsplit_once('.').expect("a JWT");
    profile["token"] = format!("{signed}.{}", "A".repeat(86)).into();
    std::fs::write(&path, profile.to_string()).expect("write profile");
    home.run(&["ls"])
        .fails(3, "the gateway refused your login")
        .fails(3, "run `todoctl login` again");
}

#[test]
fn missing_entries_exit_4_and_the_others_are_still_done() {
    let home = Home::new(the_stack());
    home.register(&unique("nf"), PASSWORD);
    home.run(&["show", "999999"])
        .fails(4, "entry 999999: not found");
    home.run(&["edit", "999999", "--title", "x"])
        .fails(4, "not found");
    let id = home.run(&["add", "real"]).ok().stdout.trim().to_owned();
    home.run(&["done", "999999", &id])
        .fails(4, "entry 999999: not found");
    assert_eq!(entry(&home, &id)["done"], true);
    home.run(&["rm", &id, "999999"])
        .fails(4, "entry 999999: not found");
    home.run(&["show", &id]).fails(4, "not found");
}

#[test]
fn explicit_gateway_env_and_profile_when_no_stack_json() {
    let stack = the_stack();
    let mut home = Home::new(stack);
    let user = unique("carol");
    home.register(&user, PASSWORD);
    // Elsewhere: no stack.json to find.
    home.state_home = home.dir.path().join("empty-state");
    home.run(&["ls"]).fails(5, "no gateway");
    home.run(&["ls", "--gateway", &stack.gateway])
        .fails(2, "also give --ca");

    let ca = stack.ca.display().to_string();
    home.run_stdin(
        &[
            "--profile",
            "work",
            "login",
            &user,
            "--password-stdin",
            "--gateway",
            &stack.gateway,
            "--ca",
            &ca,
        ],
        &format!("{PASSWORD}\r\n"),
    )
    .ok();
    // The profile remembers where it logged in.
    home.run(&["--profile", "work", "add", "from the profile"])
        .ok();
    let mut cmd = home.command(&["ls", "--json"]);
    cmd.env("TODOCTL_GATEWAY", &stack.gateway)
        .env("TODOCTL_CA", &ca)
        .env("TODOCTL_PROFILE", "work");
    let listed = home.run_with(cmd, None).ok().json();
    assert_eq!(listed[0]["title"], "from the profile");
    // The default profile still has its own token but nowhere to go.
    home.run(&["ls"]).fails(5, "no gateway");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn unreachable_gateway_fails_within_the_timeout_with_exit_5() {
    let stack = the_stack();
    let home = Home::new(stack);
    let gateway = format!("127.0.0.1:{}", free_port());
    let ca = stack.ca.display().to_string();
    let run = home.run_stdin(
        &[
            "--gateway",
            &gateway,
            "--ca",
            &ca,
            "--timeout",
            "2s",
            "login",
            "x",
            "--password-stdin",
        ],
        "password\n",
    );
    let run = run.fails(
        5,
        &format!("cannot reach the gateway at {gateway} within 2s"),
    );
    // It kept retrying until the timeout, and no longer.
    assert!(
        run.took >= Duration::from_millis(1800) && run.took < Duration::from_secs(5),
        "took {:?}",
        run.took
    );
}

/// Forwards every connection on `listener` to `to` (loopback only), once
/// `delay` has passed: a gateway that comes up late.
fn late_proxy(listener: TcpListener, to: String, delay: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&to) else {
                continue;
            };
            for (mut from, mut into) in [
                (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                ),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

#[test]
fn retries_until_the_gateway_answers() {
    let stack = the_stack();
    let home = Home::new(stack);
    // Taken now but not listening (backlog closed) until the proxy starts:
    // connections are refused meanwhile.
    let port = free_port();
    let gateway = format!("127.0.0.1:{port}");
    let ca = stack.ca.display().to_string();
    let started = Instant::now();
    let delay = Duration::from_millis(1200);
    let proxy_gateway = stack.gateway.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind proxy");
        late_proxy(listener, proxy_gateway, Duration::ZERO);
    });
    let user = unique("late");
    home.run_stdin(
        &[
            "--gateway",
            &gateway,
            "--ca",
            &ca,
            "--timeout",
            "20s",
            "register",
            &user,
            "--email",
            &format!("{user}@example.org"),
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    )
    .ok();
    assert!(started.elapsed() >= delay);
    home.run(&["add", "after the wait"]).ok();
}

#[test]
fn completions_and_man_page_are_generated() {
    let home = Home::new(the_stack());
    let bash = home.run(&["completions", "bash"]).ok().stdout;
    assert!(
        bash.contains("_todoctl()") && bash.contains("undone"),
        "{bash}"
    );
    let zsh = home.run(&["completions", "zsh"]).ok().stdout;
    assert!(zsh.starts_with("#compdef todoctl"), "{zsh}");
    let fish = home.run(&["completions", "fish"]).ok().stdout;
    assert!(
        fish.contains("complete -c todoctl") && fish.contains("password-stdin"),
        "{fish}"
    );
    let man = home.run(&["man"]).ok().stdout;
    assert!(man.contains(".TH todoctl 1"), "{man}");
    for needle in [
        "register",
        "whoami",
        "\\-\\-timeout",
        "Exit status",
        "TODOCTL_GATEWAY",
    ] {
        assert!(
            man.contains(needle),
            "{needle} missing from the man page:\n{man}"
        );
    }
}

#[test]
fn help_documents_exit_codes_and_usage_errors_exit_2() {
    let home = Home::new(the_stack());
    let help = home.run(&["--help"]).ok().stdout;
    for line in [
        "2  usage error",
        "3  authentication",
        "4  not found",
        "5  unavailable",
        "1  any other error",
    ] {
        assert!(help.contains(line), "{line} missing:\n{help}");
    }
    assert_eq!(home.run(&["edit", "1"]).code, 2);
    assert_eq!(home.run(&["frobnicate"]).code, 2);
    assert_eq!(home.run(&["--timeout", "soon", "ls"]).code, 2);
    home.run(&["login", "x"]).fails(2, "use --password-stdin");
}

#[test]
fn the_command_the_stack_suggests_works() {
    let stack = the_stack();
    let log = stack.running.log();
    let suggested = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("try:"))
        .unwrap_or_else(|| panic!("no suggestion in:\n{log}"))
        .trim();
    let mut words: Vec<String> = suggested.split(' ').map(str::to_owned).collect();
    assert_eq!(words[0], "todoctl", "{suggested}");
    let user = unique("newcomer");
    for word in &mut words {
        match word.as_str() {
            "NAME" => *word = user.clone(),
            "ADDRESS" => *word = format!("{user}@example.org"),
            _ => {}
        }
    }
    words.push("--password-stdin".into());
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    // Not in the default state dir: the suggestion names the gateway.
    let mut home = Home::new(stack);
    home.state_home = home.dir.path().join("elsewhere");
    home.run_stdin(&args, &format!("{PASSWORD}\n")).ok();
    home.run(&["add", "first"]).ok();
}

/// Reads `from` into `seen` until it contains `needle` (or EOF / timeout).
fn read_until(from: &mut impl std::io::Read, seen: &mut String, needle: &str) -> bool {
    let mut buf = [0u8; 256];
    while !seen.contains(needle) {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    true
}

#[test]
fn login_prompts_for_the_password_on_the_terminal_without_echo() {
    use std::io::Write;
    use std::process::Stdio;
    let home = Home::new(the_stack());
    let user = unique("tty");
    home.register(&user, PASSWORD);
    home.run(&["logout"]).ok();

    // util-linux `script` gives todoctl a terminal (a pty).
    let todoctl = format!("{} login {user}", env!("CARGO_BIN_EXE_todoctl"));
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &todoctl, "/dev/null"]);
    home.environment(&mut script);
    let mut child = script
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("script(1) from util-linux");
    let mut stdout = child.stdout.take().expect("stdout");
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let prompted = read_until(&mut stdout, &mut seen, "Password: ");
        let _ = seen_tx.send(prompted);
        let _ = std::io::Read::read_to_string(&mut stdout, &mut seen);
        seen
    });
    assert!(
        seen_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or(false),
        "no password prompt"
    );
    // The prompt is written just before echo is turned off.
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("type the password");
    let status = child.wait().expect("script");
    drop(stdin);
    let output = reader.join().expect("reader");
    assert!(status.success(), "{output}");
    assert!(output.contains(&format!("logged in as {user}")), "{output}");
    assert!(
        !output.contains(PASSWORD),
        "the password was echoed: {output}"
    );
    home.run(&["whoami"]).ok();
}
