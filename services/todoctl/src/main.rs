//! `todoctl`: the command-line client of todoapp.

mod cli;
mod client;
mod error;
mod output;
mod profile;
mod target;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use todoapp_api::{
    CreateToDoReq, DeleteToDoReq, GetToDoReq, ListToDoReq, LoginReq, RegisterReq, ToDoEntry,
    UpdateToDoReq,
};

use crate::cli::{Cli, Command, Format, Global, PasswordInput};
use crate::client::Gateway;
use crate::error::{CliError, Result};
use crate::profile::{unix_now, Profile, ProfileStore, TokenClaims};
use crate::target::{Source, Target};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&CliError::Other(format!("cannot start: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(error: &CliError) -> ExitCode {
    if !matches!(error, CliError::Silent(_)) {
        eprintln!("todoctl: {}", error::one_line(error.message()));
    }
    ExitCode::from(error.exit_code())
}

/// Everything a command needs: the profile and, on demand, the gateway.
struct Session {
    global: Global,
    store: ProfileStore,
    profile: Profile,
}

impl Session {
    fn target(&self) -> Result<Target> {
        target::resolve(&self.global, &self.profile)
    }

    fn gateway(&self) -> Result<Gateway> {
        Gateway::new(&self.target()?, self.global.timeout)
    }

    /// The gateway with the profile's token, refused locally when the
    /// token has expired.
    fn authed(&self) -> Result<Gateway> {
        let token = self.store.valid_token(&self.profile, unix_now())?;
        Ok(self.gateway()?.with_token(token, self.store.login_hint()))
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "todoctl", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => return print_man_page(),
        _ => {}
    }
    let store = ProfileStore::open(&cli.global.profile)?;
    let profile = store.load()?;
    let session = Session {
        global: cli.global,
        store,
        profile,
    };
    match cli.command {
        Command::Register {
            username,
            email,
            password,
        } => register(session, username, email, &password).await,
        Command::Login { username, password } => login(session, username, &password).await,
        Command::Logout => logout(session),
        Command::Whoami => whoami(&session),
        Command::Add { title, text } => add(&session, title, text.unwrap_or_default()).await,
        Command::Ls { all, limit, format } => list(&session, all, limit, &format).await,
        Command::Show { id, format } => show(&session, id, &format).await,
        Command::Edit { id, title, text } => {
            edit(&session, id, |entry| {
                if let Some(title) = title.clone() {
                    entry.title = title;
                }
                if let Some(text) = text.clone() {
                    entry.text = text;
                }
            })
            .await
        }
        Command::Done { ids } => for_each(&session, &ids, "done", |e| e.done = Some(true)).await,
        Command::Undone { ids } => {
            for_each(&session, &ids, "undone", |e| e.done = Some(false)).await
        }
        Command::Rm { ids } => remove(&session, &ids).await,
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

fn print_man_page() -> Result<()> {
    let man = clap_mangen::Man::new(Cli::command());
    let mut out = std::io::stdout().lock();
    match man.render(&mut out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Other(format!("writing the man page: {e}")))
        }
        _ => Ok(()),
    }
}

/// The password from stdin's first line, or from a prompt that does not
/// echo it.
fn read_password(input: &PasswordInput, confirm: bool) -> Result<String> {
    let password = if input.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::Other(format!("reading the password from stdin: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "no terminal to ask for the password: use --password-stdin".into(),
            ));
        }
        let prompt = |text: &str| {
            rpassword::prompt_password(text)
                .map_err(|e| CliError::Other(format!("reading the password: {e}")))
        };
        let password = prompt("Password: ")?;
        if confirm && prompt("Password (again): ")? != password {
            return Err(CliError::Usage("the passwords differ".into()));
        }
        password
    };
    if password.is_empty() {
        return Err(CliError::Usage("empty password".into()));
    }
    Ok(password)
}

async fn register(
    session: Session,
    username: String,
    email: String,
    input: &PasswordInput,
) -> Result<()> {
    let password = read_password(input, true)?;
    let gateway = session.gateway()?;
    gateway
        .call("register", || {
            let mut users = gateway.users();
            let request = RegisterReq {
                username: username.clone(),
                password: password.clone(),
                email: email.clone(),
            };
            async move { users.register(request).await }
        })
        .await?;
    eprintln!("registered {username}");
    finish_login(session, &gateway, username, password).await
}

async fn login(session: Session, username: Option<String>, input: &PasswordInput) -> Result<()> {
    let username = username
        .or_else(|| session.profile.username.clone())
        .ok_or_else(|| CliError::Usage("login: which user? `todoctl login USERNAME`".into()))?;
    let password = read_password(input, false)?;
    let gateway = session.gateway()?;
    finish_login(session, &gateway, username, password).await
}

async fn finish_login(
    session: Session,
    gateway: &Gateway,
    username: String,
    password: String,
) -> Result<()> {
    let reply = gateway
        .call("login", || {
            let mut users = gateway.users();
            let request = LoginReq {
                username: username.clone(),
                password: password.clone(),
            };
            async move { users.login(request).await }
        })
        .await?;
    let claims = TokenClaims::decode(&reply.jwt_token)?;
    let target = session.target()?;
    let mut profile = session.profile;
    // Remember where to connect only when told; a local stack is found
    // again each time (its port may change).
    if target.source == Source::Explicit {
        profile.gateway = Some(target.gateway.clone());
        profile.ca = Some(std::path::absolute(&target.ca).unwrap_or(target.ca.clone()));
    }
    profile.username = Some(username.clone());
    profile.token = Some(reply.jwt_token);
    session.store.save(&profile)?;
    eprintln!(
        "logged in as {username} on {} (token expires {})",
        target.gateway,
        output::relative_time(claims.exp as i64, unix_now() as i64)
    );
    Ok(())
}

fn logout(session: Session) -> Result<()> {
    let mut profile = session.profile;
    if profile.token.take().is_none() {
        eprintln!("not logged in");
        return Ok(());
    }
    session.store.save(&profile)?;
    eprintln!("logged out");
    Ok(())
}

fn whoami(session: &Session) -> Result<()> {
    let now = unix_now();
    let token = session.store.valid_token(&session.profile, now)?;
    let claims = TokenClaims::decode(&token)?;
    let target = session.target();
    let gateway = match &target {
        Ok(t) => match &t.source {
            Source::Stack(path) => format!("{} (local stack, {})", t.gateway, path.display()),
            _ => t.gateway.clone(),
        },
        Err(e) => format!("none ({e})"),
    };
    println!(
        "user:    {} (id {})",
        session.profile.username.as_deref().unwrap_or("?"),
        claims.sub
    );
    println!(
        "profile: {} ({})",
        session.store.name(),
        session.store.path().display()
    );
    println!("gateway: {gateway}");
    println!(
        "expires: {} ({})",
        output::relative_time(claims.exp as i64, now as i64),
        output::rfc3339(claims.exp as i64)
    );
    Ok(())
}

async fn add(session: &Session, title: String, text: String) -> Result<()> {
    let gateway = session.authed()?;
    // One request id for every attempt: a retried create stores one entry.
    let request_id = uuid::Uuid::new_v4().to_string();
    let reply = gateway
        .call("add", || {
            let mut todos = gateway.todos();
            let request = gateway.request(CreateToDoReq {
                item: Some(ToDoEntry {
                    title: title.clone(),
                    text: text.clone(),
                    ..ToDoEntry::default()
                }),
                request_id: request_id.clone(),
            });
            async move { todos.create_to_do(request).await }
        })
        .await?;
    println!("{}", reply.id);
    Ok(())
}

async fn list(session: &Session, all: bool, limit: Option<u32>, format: &Format) -> Result<()> {
    let gateway = session.authed()?;
    let mut entries = Vec::new();
    let mut page_token = String::new();
    let more = loop {
        let reply = gateway
            .call("ls", || {
                let mut todos = gateway.todos();
                let request = gateway.request(ListToDoReq {
                    limit: limit.unwrap_or(0),
                    page_token: page_token.clone(),
                });
                async move { todos.list_to_do(request).await }
            })
            .await?;
        entries.extend(reply.items);
        page_token = reply.next_page_token;
        if page_token.is_empty() || !all {
            break !page_token.is_empty();
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if format.json {
        let list: Vec<_> = entries.iter().map(output::entry_json).collect();
        writeln!(out, "{}", serde_json::Value::Array(list))
    } else if format.jsonl {
        entries
            .iter()
            .try_for_each(|e| writeln!(out, "{}", output::entry_json(e)))
    } else if entries.is_empty() {
        writeln!(std::io::stderr(), "no entries")
    } else {
        write!(out, "{}", output::table(&entries, unix_now() as i64))
    };
    match written {
        // `todoctl ls | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.map_err(|e| CliError::Other(format!("writing the list: {e}")))?,
    }
    if more {
        eprintln!("(more entries: `todoctl ls --all`)");
    }
    Ok(())
}

async fn fetch(gateway: &Gateway, what: &str, id: i32) -> Result<ToDoEntry> {
    let reply = gateway
        .call(what, || {
            let mut todos = gateway.todos();
            let request = gateway.request(GetToDoReq { id });
            async move { todos.get_to_do(request).await }
        })
        .await?;
    reply
        .item
        .ok_or_else(|| CliError::Other(format!("{what}: the gateway sent no entry")))
}

async fn show(session: &Session, id: i32, format: &Format) -> Result<()> {
    let gateway = session.authed()?;
    let entry = fetch(&gateway, &format!("entry {id}"), id).await?;
    if format.json || format.jsonl {
        println!("{}", output::entry_json(&entry));
    } else {
        print!("{}", output::detail(&entry, unix_now() as i64));
    }
    Ok(())
}

/// Reads entry `id`, applies `change` and writes it back (an update sets
/// title and text together, so the unchanged one is sent as it was).
async fn update(gateway: &Gateway, id: i32, change: impl Fn(&mut ToDoEntry)) -> Result<()> {
    let what = format!("entry {id}");
    let mut entry = fetch(gateway, &what, id).await?;
    change(&mut entry);
    let item = ToDoEntry {
        id,
        title: entry.title,
        text: entry.text,
        done: entry.done,
        ..ToDoEntry::default()
    };
    gateway
        .call(&what, || {
            let mut todos = gateway.todos();
            let request = gateway.request(UpdateToDoReq {
                item: Some(item.clone()),
            });
            async move { todos.update_to_do(request).await }
        })
        .await?;
    Ok(())
}

async fn edit(session: &Session, id: i32, change: impl Fn(&mut ToDoEntry)) -> Result<()> {
    let gateway = session.authed()?;
    update(&gateway, id, change).await
}

/// Applies `change` to every id; reports each failure on its own line and
/// exits with the last failure's status.
async fn for_each(
    session: &Session,
    ids: &[i32],
    verb: &str,
    change: impl Fn(&mut ToDoEntry),
) -> Result<()> {
    let gateway = session.authed()?;
    let mut last_error = None;
    for &id in ids {
        match update(&gateway, id, &change).await {
            Ok(()) => eprintln!("{id}: {verb}"),
            Err(e) => last_error = Some(report(e)),
        }
    }
    last_error.map_or(Ok(()), Err)
}

async fn remove(session: &Session, ids: &[i32]) -> Result<()> {
    let gateway = session.authed()?;
    let mut last_error = None;
    for &id in ids {
        let deleted = gateway
            .call(&format!("entry {id}"), || {
                let mut todos = gateway.todos();
                let request = gateway.request(DeleteToDoReq { id });
                async move { todos.delete_to_do(request).await }
            })
            .await;
        match deleted {
            Ok(_) => eprintln!("{id}: removed"),
            Err(e) => last_error = Some(report(e)),
        }
    }
    last_error.map_or(Ok(()), Err)
}

/// Prints an error of one item of several now; the caller exits with it.
fn report(error: CliError) -> CliError {
    eprintln!("todoctl: {}", error::one_line(error.message()));
    CliError::Silent(error.exit_code())
}
