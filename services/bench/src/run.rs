//! Seeding, and running one scenario: C closed-loop workers over K
//! connections, a warm-up, a measured window, with the client's CPU and the
//! services' CPU and memory sampled alongside.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Serialize;
use todoapp_api::to_do_client::ToDoClient;
use todoapp_api::user_client::UserClient;
use todoapp_api::{
    CreateToDoReq, DeleteToDoReq, GetToDoReq, ListToDoReq, LoginReq, RegisterReq, ToDoEntry,
    UpdateToDoReq,
};
use todoapp_e2e::scenarios::Ctx;
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::mix::{Op, Rng, MIXED};
use crate::procs::{self, Pids};
use crate::scenario::{Kind, Spec};
use crate::stats::{add_counts, rate, LatencySummary, OpStats};
use crate::target::{Conns, Via};

/// A seeded user: credentials, both ways of naming it to the todo service,
/// and its seeded entries (never deleted, so gets and updates always hit).
pub struct Account {
    pub username: String,
    pub password: String,
    pub user_id: String,
    bearer: MetadataValue<Ascii>,
    user_id_value: MetadataValue<Ascii>,
    pub entries: Vec<i32>,
}

impl Account {
    fn new(username: String, password: String, token: &str) -> Result<Self, String> {
        let user_id = subject(token)?;
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| format!("token is not ASCII metadata: {e}"))?;
        let user_id_value = MetadataValue::try_from(user_id.as_str())
            .map_err(|e| format!("user id is not ASCII metadata: {e}"))?;
        Ok(Self {
            username,
            password,
            user_id,
            bearer,
            user_id_value,
            entries: Vec::new(),
        })
    }

    /// `message` carrying this user's identity the way `via` expects it.
    fn request<T>(&self, via: Via, message: T) -> Request<T> {
        let mut request = Request::new(message);
        match via {
            Via::Gateway => request
                .metadata_mut()
                .insert("authorization", self.bearer.clone()),
            Via::Direct => request
                .metadata_mut()
                .insert(todoapp_auth::USER_ID_HEADER, self.user_id_value.clone()),
        };
        request
    }
}

/// The `sub` claim of a JWT (unverified: the bench only needs the id the
/// user service put there, for direct calls to the todo backend).
pub fn subject(token: &str) -> Result<String, String> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("login returned a token that is not a JWT")?;
    let bytes = B64
        .decode(payload)
        .map_err(|e| format!("JWT payload is not base64url: {e}"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("JWT payload is not JSON: {e}"))?;
    claims["sub"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "JWT has no `sub` claim".to_owned())
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
}

async fn create_entry(
    conns: &Conns,
    channel: &Channel,
    account: &Account,
    title: String,
) -> Result<i32, String> {
    let item = ToDoEntry {
        title,
        text: ENTRY_TEXT.to_owned(),
        ..Default::default()
    };
    // Seeding many entries per user runs into the gateway's per-user rate
    // limit: wait as it says (bounded) and retry.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let request = account.request(
            conns.via,
            CreateToDoReq {
                item: Some(item.clone()),
                ..Default::default()
            },
        );
        match ToDoClient::new(channel.clone()).create_to_do(request).await {
            Ok(response) => return Ok(response.into_inner().id),
            Err(status) => match todoapp_e2e::client::retry_after(&status) {
                Some(delay) if Instant::now() + delay < deadline => {
                    tokio::time::sleep(delay).await;
                }
                _ => {
                    return Err(format!(
                        "seeding: CreateToDo: {:?}: {}",
                        status.code(),
                        status.message()
                    ))
                }
            },
        }
    }
}

const ENTRY_TEXT: &str =
    "Benchmark entry: a short note of about the length people write into a todo item.";

/// Registers and logs in `users` fresh users (a few at a time: each costs
/// two argon2id hashes) and creates `entries` entries for each.
pub async fn seed(conns: &Conns, users: usize, entries: usize) -> Result<Vec<Account>, String> {
    let ctx = Arc::new(Ctx::new(conns.user[0].clone()));
    let mut accounts = Vec::with_capacity(users);
    let mut pending = JoinSet::new();
    let mut started = 0;
    while accounts.len() < users {
        while started < users && pending.len() < 8 {
            let ctx = ctx.clone();
            pending.spawn(async move { ctx.account().await });
            started += 1;
        }
        let Some(joined) = pending.join_next().await else {
            break;
        };
        let account = joined.map_err(|e| format!("seeding task failed: {e}"))??;
        accounts.push(Account::new(
            account.username,
            account.password,
            &account.token,
        )?);
    }

    let conns = Arc::new(conns.clone());
    let accounts = Arc::new(accounts);
    let mut created: Vec<Vec<i32>> = vec![Vec::with_capacity(entries); users];
    let jobs: Vec<(usize, usize)> = (0..users)
        .flat_map(|u| (0..entries).map(move |e| (u, e)))
        .collect();
    let mut jobs = jobs.into_iter();
    let mut pending = JoinSet::new();
    loop {
        while pending.len() < 32 {
            let Some((u, e)) = jobs.next() else { break };
            let (conns, accounts) = (conns.clone(), accounts.clone());
            pending.spawn(async move {
                let channel = &conns.todo[e % conns.todo.len()];
                create_entry(&conns, channel, &accounts[u], format!("seed {e}"))
                    .await
                    .map(|id| (u, id))
            });
        }
        let Some(joined) = pending.join_next().await else {
            break;
        };
        let (u, id) = joined.map_err(|e| format!("seeding task failed: {e}"))??;
        created[u].push(id);
    }
    let mut accounts = Arc::try_unwrap(accounts)
        .map_err(|_| "seeding tasks still hold the accounts".to_owned())?;
    for (account, mut ids) in accounts.iter_mut().zip(created) {
        ids.sort_unstable();
        account.entries = ids;
    }
    Ok(accounts)
}

/// Everything a scenario run shares.
pub struct Shared {
    pub accounts: Vec<Account>,
    pub list_limit: u32,
    /// Unique per bench process, for registered usernames.
    pub run_id: String,
}

/// When the phases of one scenario run begin and end.
#[derive(Debug, Clone, Copy)]
struct Phases {
    measure_start: Instant,
    measure_end: Instant,
}

/// One worker's view: its connection, its random source, and entries it
/// created itself (the only ones it may delete).
struct Worker {
    shared: Arc<Shared>,
    conns: Conns,
    channel: usize,
    rng: Rng,
    label: String,
    sequence: u64,
    created: Vec<(usize, i32)>,
    keeps_created: bool,
    /// The one account this worker calls as, if not a random one.
    pinned: Option<usize>,
}

/// How one call ended, for the op actually performed.
struct Outcome {
    op: Op,
    result: Result<(), Code>,
}

impl Worker {
    /// A random seeded account (the Arc is cloned so `self` stays free).
    fn account(&mut self) -> (usize, Arc<Shared>) {
        if let Some(index) = self.pinned {
            return (index, self.shared.clone());
        }
        let index = self.rng.below(self.shared.accounts.len());
        (index, self.shared.clone())
    }

    fn todo(&self) -> ToDoClient<Channel> {
        ToDoClient::new(self.conns.todo[self.channel].clone())
    }

    fn seeded_entry(&mut self) -> Option<(usize, i32)> {
        let (index, shared) = self.account();
        let entries = &shared.accounts[index].entries;
        let pick = self.rng.below(entries.len());
        entries.get(pick).map(|id| (index, *id))
    }

    async fn call(&mut self, op: Op) -> Outcome {
        let via = self.conns.via;
        let result = match op {
            Op::Health => {
                let mut client = HealthClient::new(self.conns.health[self.channel].clone());
                match client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    Ok(rsp) if rsp.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
                    Ok(_) => Err(Code::Unavailable),
                    Err(status) => Err(status.code()),
                }
            }
            Op::Get | Op::HammerGet => match self.seeded_entry() {
                Some((index, id)) => {
                    let request = self.shared.accounts[index].request(via, GetToDoReq { id });
                    match self.todo().get_to_do(request).await {
                        Ok(rsp)
                            if rsp
                                .get_ref()
                                .item
                                .as_ref()
                                .is_some_and(|item| item.id == id) =>
                        {
                            Ok(())
                        }
                        Ok(_) => Err(Code::DataLoss),
                        Err(status) => Err(status.code()),
                    }
                }
                None => Err(Code::FailedPrecondition),
            },
            Op::GetMissing => {
                let (index, shared) = self.account();
                let request = shared.accounts[index].request(via, GetToDoReq { id: i32::MAX });
                self.todo()
                    .get_to_do(request)
                    .await
                    .map(drop)
                    .map_err(|s| s.code())
            }
            Op::List => {
                let limit = self.shared.list_limit;
                let (index, shared) = self.account();
                let request = shared.accounts[index].request(
                    via,
                    ListToDoReq {
                        limit,
                        page_token: String::new(),
                    },
                );
                self.todo()
                    .list_to_do(request)
                    .await
                    .map(drop)
                    .map_err(|s| s.code())
            }
            Op::Create => return self.create(false).await,
            Op::CreateOnce => return self.create(true).await,
            Op::Delete => match self.created.pop() {
                Some((index, id)) => {
                    let request = self.shared.accounts[index].request(via, DeleteToDoReq { id });
                    self.todo()
                        .delete_to_do(request)
                        .await
                        .map(drop)
                        .map_err(|s| s.code())
                }
                None => return self.create(false).await,
            },
            Op::Update => match self.seeded_entry() {
                Some((index, id)) => {
                    self.sequence += 1;
                    let item = ToDoEntry {
                        id,
                        title: format!("updated {} {}", self.label, self.sequence),
                        text: ENTRY_TEXT.to_owned(),
                        done: Some(self.sequence.is_multiple_of(2)),
                        ..Default::default()
                    };
                    let request = self.shared.accounts[index]
                        .request(via, UpdateToDoReq { item: Some(item) });
                    self.todo()
                        .update_to_do(request)
                        .await
                        .map(drop)
                        .map_err(|s| s.code())
                }
                None => Err(Code::FailedPrecondition),
            },
            Op::Login => {
                let (index, shared) = self.account();
                let account = &shared.accounts[index];
                let request = LoginReq {
                    username: account.username.clone(),
                    password: account.password.clone(),
                };
                let mut client = UserClient::new(self.conns.user[self.channel].clone());
                match client.login(request).await {
                    Ok(rsp) if !rsp.get_ref().jwt_token.is_empty() => Ok(()),
                    Ok(_) => Err(Code::DataLoss),
                    Err(status) => Err(status.code()),
                }
            }
            Op::Register => {
                self.sequence += 1;
                let username = format!(
                    "bench-{}-{}-{}",
                    self.shared.run_id, self.label, self.sequence
                );
                let request = RegisterReq {
                    email: format!("{username}@example.org"),
                    password: self
                        .shared
                        .accounts
                        .first()
                        .map_or_else(|| "bench password".to_owned(), |a| a.password.clone()),
                    username,
                };
                let mut client = UserClient::new(self.conns.user[self.channel].clone());
                client
                    .register(request)
                    .await
                    .map(drop)
                    .map_err(|s| s.code())
            }
        };
        Outcome { op, result }
    }

    /// A `CreateToDo`; `with_request_id`: with a fresh request id, so the
    /// service stores the id beside the entry.
    async fn create(&mut self, with_request_id: bool) -> Outcome {
        self.sequence += 1;
        let (index, shared) = self.account();
        let item = ToDoEntry {
            title: format!("bench {} {}", self.label, self.sequence),
            text: ENTRY_TEXT.to_owned(),
            ..Default::default()
        };
        let request = shared.accounts[index].request(
            self.conns.via,
            CreateToDoReq {
                item: Some(item),
                request_id: if with_request_id {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    String::new()
                },
            },
        );
        let op = if with_request_id {
            Op::CreateOnce
        } else {
            Op::Create
        };
        let result = match self.todo().create_to_do(request).await {
            Ok(rsp) => {
                if self.keeps_created {
                    self.created.push((index, rsp.get_ref().id));
                }
                Ok(())
            }
            Err(status) => Err(status.code()),
        };
        Outcome { op, result }
    }
}

/// Codes a scenario asks for (counted, but not as errors).
fn expected(op: Op, code: Code) -> bool {
    matches!(
        (op, code),
        (Op::GetMissing, Code::NotFound) | (Op::HammerGet, Code::ResourceExhausted)
    )
}

async fn run_worker(
    mut worker: Worker,
    weights: Vec<(Op, u32)>,
    pace: Option<Duration>,
    phases: Phases,
) -> BTreeMap<Op, OpStats> {
    let mut stats: BTreeMap<Op, OpStats> = BTreeMap::new();
    let mut next_start = Instant::now();
    while Instant::now() < phases.measure_end {
        let Some(op) = worker.rng.pick(&weights) else {
            break;
        };
        if let Some(pace) = pace {
            // A paced worker keeps its rate but never bunches up calls it
            // fell behind on: a late call just starts now.
            tokio::time::sleep_until(next_start.into()).await;
            next_start = Instant::now().max(next_start) + pace;
        }
        let started = Instant::now();
        let outcome = worker.call(op).await;
        let done = Instant::now();
        let entry = stats.entry(outcome.op).or_default();
        match outcome.result {
            Ok(()) => {
                entry.total_ok += 1;
                if done >= phases.measure_start && done < phases.measure_end {
                    entry.measured.record(done - started);
                }
            }
            Err(code) if expected(outcome.op, code) => {
                *entry.expected.entry(code_name(code)).or_default() += 1;
                if done >= phases.measure_start && done < phases.measure_end {
                    entry.measured.record(done - started);
                }
            }
            Err(code) => *entry.errors.entry(code_name(code)).or_default() += 1,
        }
    }
    stats
}

#[derive(Debug, Clone, Serialize)]
pub struct OpResult {
    pub requests: u64,
    pub rps: f64,
    pub latency: LatencySummary,
    /// Successful calls over the whole run, warm-up included.
    pub total_ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub expected_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    pub user_s: f64,
    pub system_s: f64,
    /// CPU seconds per wall second over the measured window (1.0 = one core).
    pub cores: f64,
}

/// The whole machine over the measured window, in cores busy.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MachineCpu {
    pub busy_cores: f64,
    /// Busy cores not spent by this client or the stack's processes:
    /// other work on the machine (or the kernel's own) skewing the run.
    pub other_cores: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MemUse {
    /// VmRSS just before the scenario started.
    pub before_kib: u64,
    /// Highest VmRSS sampled (every 50 ms) during warm-up and measurement.
    pub peak_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub via: Via,
    /// Calls in flight for the headline op (GetToDo in `login-burst`).
    pub concurrency: usize,
    /// Extra calls in flight besides (the logins of `login-burst`).
    pub background_concurrency: usize,
    pub connections: usize,
    pub measured_s: f64,
    /// Headline: every op, except in `login-burst` where it is GetToDo alone.
    pub requests: u64,
    pub rps: f64,
    pub latency: LatencySummary,
    /// Unexpected failures by status code, whole run, every op.
    pub errors: BTreeMap<String, u64>,
    pub expected_errors: BTreeMap<String, u64>,
    pub ops: BTreeMap<String, OpResult>,
    pub client_cpu: CpuUse,
    /// Cores used by each stack process over the measured window.
    pub process_cpu: BTreeMap<String, f64>,
    pub machine_cpu: MachineCpu,
    pub memory: BTreeMap<String, MemUse>,
}

impl ScenarioResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn total_ok(&self, op: Op) -> u64 {
        self.ops.get(op.name()).map_or(0, |o| o.total_ok)
    }
}

/// Users besides the hammering one in `fair-share` and `fair-share-idle`:
/// seeded accounts 1 to 8, one GetToDo in flight each; account 0 hammers.
pub const FAIR_SHARE_OTHERS: usize = 8;

/// Which seeded accounts a group's workers call as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accounts {
    /// A random one per call.
    Any,
    /// All workers as this one.
    One(usize),
    /// Worker i as account `first + i`.
    EachOwn { first: usize },
}

/// One group of workers.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    weights: Vec<(Op, u32)>,
    workers: usize,
    accounts: Accounts,
    /// Each worker on a connection of its own (`Conns::own`), as separate
    /// clients are; otherwise the workers share the K connections.
    own_connections: bool,
    /// A worker starts at most one call per this interval (a person's
    /// pace); `None`: the next call as soon as the last one answered.
    pace: Option<Duration>,
}

impl Group {
    fn closed_loop(weights: Vec<(Op, u32)>, workers: usize, accounts: Accounts) -> Self {
        Self {
            weights,
            workers,
            accounts,
            own_connections: false,
            pace: None,
        }
    }
}

/// The worker groups of a scenario; the first is the headline.
fn groups(spec: &Spec, burst_logins: usize, fair_share_pace: Option<Duration>) -> Vec<Group> {
    let single = |op: Op| {
        vec![Group::closed_loop(
            vec![(op, 1)],
            spec.concurrency,
            Accounts::Any,
        )]
    };
    let others = Group {
        weights: vec![(Op::Get, 1)],
        workers: FAIR_SHARE_OTHERS,
        accounts: Accounts::EachOwn { first: 1 },
        own_connections: true,
        pace: fair_share_pace,
    };
    match spec.kind {
        Kind::Health => single(Op::Health),
        Kind::Get => single(Op::Get),
        Kind::GetMissing => single(Op::GetMissing),
        Kind::List => single(Op::List),
        Kind::Create => single(Op::Create),
        Kind::CreateOnce => single(Op::CreateOnce),
        Kind::Update => single(Op::Update),
        Kind::Login => single(Op::Login),
        Kind::Register => single(Op::Register),
        Kind::Mixed => vec![Group::closed_loop(
            MIXED.to_vec(),
            spec.concurrency,
            Accounts::Any,
        )],
        Kind::LoginBurst => vec![
            Group::closed_loop(vec![(Op::Get, 1)], spec.concurrency, Accounts::Any),
            Group::closed_loop(vec![(Op::Login, 1)], burst_logins, Accounts::Any),
        ],
        Kind::FairShare => vec![
            others,
            Group::closed_loop(vec![(Op::HammerGet, 1)], spec.concurrency, Accounts::One(0)),
        ],
        Kind::FairShareIdle => vec![others],
    }
}

pub struct RunSettings {
    pub warmup: Duration,
    pub duration: Duration,
    pub burst_logins: usize,
    /// Interval between the calls of each fair-share user (`None`: back to back).
    pub fair_share_pace: Option<Duration>,
    pub seed: u64,
}

/// Runs one scenario one way and returns what it measured.
pub async fn run_scenario(
    shared: &Arc<Shared>,
    conns: &Conns,
    spec: &Spec,
    settings: &RunSettings,
    pids: &Pids,
    index: usize,
) -> Result<ScenarioResult, String> {
    let groups = groups(spec, settings.burst_logins, settings.fair_share_pace);
    if spec.kind.is_fair_share() && shared.accounts.len() <= FAIR_SHARE_OTHERS {
        return Err(format!(
            "{} needs at least {} seeded users (--users)",
            spec.kind.name(),
            FAIR_SHARE_OTHERS + 1
        ));
    }
    let start = Instant::now();
    let phases = Phases {
        measure_start: start + settings.warmup,
        measure_end: start + settings.warmup + settings.duration,
    };

    let before: BTreeMap<&'static str, u64> = pids
        .0
        .iter()
        .filter_map(|(n, p)| procs::rss_kib(*p).map(|k| (*n, k)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_memory(pids.clone(), stop.clone()));
    let cpu = tokio::spawn(sample_cpu(pids.clone(), phases));

    let mut workers = JoinSet::new();
    let mut n = 0usize;
    for group in &groups {
        let keeps_created = group.weights.iter().any(|(op, _)| *op == Op::Delete);
        for i in 0..group.workers {
            let pinned = match group.accounts {
                Accounts::Any => None,
                Accounts::One(index) => Some(index),
                Accounts::EachOwn { first } => Some(first + i),
            };
            let (conns, channel) = match conns.own.get(i) {
                Some(own) if group.own_connections => (
                    Conns {
                        todo: vec![own.clone()],
                        ..conns.clone()
                    },
                    0,
                ),
                _ if group.own_connections => {
                    return Err(format!(
                        "{}: no connection of its own for worker {i}",
                        spec.kind.name()
                    ))
                }
                _ => (conns.clone(), n % conns.todo.len().max(1)),
            };
            let worker = Worker {
                shared: shared.clone(),
                conns,
                channel,
                rng: Rng::new(settings.seed ^ ((index as u64) << 32) ^ n as u64),
                label: format!("{index}-{n}"),
                sequence: 0,
                created: Vec::new(),
                keeps_created,
                pinned,
            };
            workers.spawn(run_worker(
                worker,
                group.weights.clone(),
                group.pace,
                phases,
            ));
            n += 1;
        }
    }
    let mut ops: BTreeMap<Op, OpStats> = BTreeMap::new();
    while let Some(joined) = workers.join_next().await {
        let stats = joined.map_err(|e| format!("worker failed: {e}"))?;
        for (op, s) in stats {
            ops.entry(op).or_default().merge(&s);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let peaks = sampler
        .await
        .map_err(|e| format!("memory sampler failed: {e}"))?;
    let (client_cpu, process_cpu, machine_busy) =
        cpu.await.map_err(|e| format!("CPU sampler failed: {e}"))?;
    let accounted = client_cpu.cores + process_cpu.values().sum::<f64>();
    let machine_cpu = MachineCpu {
        busy_cores: machine_busy,
        other_cores: (machine_busy - accounted).max(0.0),
    };

    let headline_ops: Vec<Op> = match spec.kind {
        Kind::LoginBurst | Kind::FairShare | Kind::FairShareIdle => vec![Op::Get],
        _ => ops.keys().copied().collect(),
    };
    let mut headline = OpStats::default();
    for op in &headline_ops {
        if let Some(s) = ops.get(op) {
            headline.merge(s);
        }
    }
    let (mut errors, mut expected_errors) = (BTreeMap::new(), BTreeMap::new());
    for s in ops.values() {
        add_counts(&mut errors, &s.errors);
        add_counts(&mut expected_errors, &s.expected);
    }
    let op_results = ops
        .iter()
        .map(|(op, s)| {
            let result = OpResult {
                requests: s.measured.count(),
                rps: rate(s.measured.count(), settings.duration),
                latency: s.measured.summary(),
                total_ok: s.total_ok,
                errors: s.errors.clone(),
                expected_errors: s.expected.clone(),
            };
            (op.name().to_owned(), result)
        })
        .collect();
    let memory = pids
        .0
        .keys()
        .map(|name| {
            let mem = MemUse {
                before_kib: before.get(name).copied().unwrap_or(0),
                peak_kib: peaks.get(name).copied().unwrap_or(0),
            };
            (name.to_string(), mem)
        })
        .collect();
    Ok(ScenarioResult {
        scenario: spec.kind.name().to_owned(),
        via: conns.via,
        concurrency: groups.first().map_or(spec.concurrency, |g| g.workers),
        background_concurrency: groups.iter().skip(1).map(|g| g.workers).sum(),
        connections: conns.todo.len(),
        measured_s: settings.duration.as_secs_f64(),
        requests: headline.measured.count(),
        rps: rate(headline.measured.count(), settings.duration),
        latency: headline.measured.summary(),
        errors,
        expected_errors,
        ops: op_results,
        client_cpu,
        process_cpu,
        machine_cpu,
        memory,
    })
}

async fn sample_memory(pids: Pids, stop: Arc<AtomicBool>) -> BTreeMap<&'static str, u64> {
    let mut peaks: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        for (name, pid) in &pids.0 {
            if let Some(kib) = procs::rss_kib(*pid) {
                let peak = peaks.entry(name).or_default();
                *peak = (*peak).max(kib);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return peaks;
        }
    }
}

async fn sample_cpu(pids: Pids, phases: Phases) -> (CpuUse, BTreeMap<String, f64>, f64) {
    tokio::time::sleep_until(phases.measure_start.into()).await;
    let t0 = Instant::now();
    let (u0, s0) = procs::own_cpu();
    let p0 = procs::cpu_times(&pids);
    let m0 = procs::machine_busy();
    tokio::time::sleep_until(phases.measure_end.into()).await;
    let wall = t0.elapsed().as_secs_f64().max(1e-9);
    let (u1, s1) = procs::own_cpu();
    let p1 = procs::cpu_times(&pids);
    let m1 = procs::machine_busy();
    let machine = match (m0, m1) {
        (Some(m0), Some(m1)) => m1.saturating_sub(m0).as_secs_f64() / wall,
        _ => 0.0,
    };
    let user_s = u1.saturating_sub(u0).as_secs_f64();
    let system_s = s1.saturating_sub(s0).as_secs_f64();
    let processes = p1
        .iter()
        .filter_map(|(name, t1)| {
            p0.get(name).map(|t0| {
                (
                    name.to_string(),
                    t1.saturating_sub(*t0).as_secs_f64() / wall,
                )
            })
        })
        .collect();
    (
        CpuUse {
            user_s,
            system_s,
            cores: (user_s + system_s) / wall,
        },
        processes,
        machine,
    )
}

/// Counts every entry of the seeded users (all pages), to check that the
/// server holds exactly what the bench believes it created.
pub async fn count_entries(shared: &Shared, conns: &Conns) -> Result<u64, String> {
    let mut total = 0u64;
    for account in &shared.accounts {
        let mut token = String::new();
        loop {
            let request = account.request(
                conns.via,
                ListToDoReq {
                    limit: 1000,
                    page_token: token.clone(),
                },
            );
            let page = ToDoClient::new(conns.todo[0].clone())
                .max_decoding_message_size(64 << 20)
                .list_to_do(request)
                .await
                .map_err(|s| {
                    format!(
                        "counting entries: ListToDo: {:?}: {}",
                        s.code(),
                        s.message()
                    )
                })?
                .into_inner();
            total += page.items.len() as u64;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_comes_from_the_jwt_payload() {
        let payload = B64.encode(br#"{"sub":"0b6c0b1e-5b1a-4a57-9d1e-1f2a3b4c5d6e","exp":1}"#);
        let token = format!("eyJhbGciOiJFZERTQSJ9.{payload}.c2ln");
        assert_eq!(
            subject(&token).as_deref(),
            Ok("0b6c0b1e-5b1a-4a57-9d1e-1f2a3b4c5d6e")
        );
        assert!(subject("nodots").is_err());
        assert!(subject("a.!!!.c").is_err());
        assert!(subject(&format!("a.{}.c", B64.encode(b"{}"))).is_err());
    }

    #[test]
    fn worker_groups_follow_the_scenario() {
        let spec = |kind, concurrency| Spec { kind, concurrency };
        let pace = Some(Duration::from_millis(25));
        let g = groups(&spec(Kind::Get, 64), 64, pace);
        assert_eq!(
            g,
            vec![Group::closed_loop(vec![(Op::Get, 1)], 64, Accounts::Any)]
        );
        let burst = groups(&spec(Kind::LoginBurst, 8), 64, pace);
        assert_eq!(
            burst,
            vec![
                Group::closed_loop(vec![(Op::Get, 1)], 8, Accounts::Any),
                Group::closed_loop(vec![(Op::Login, 1)], 64, Accounts::Any)
            ]
        );
        assert_eq!(
            groups(&spec(Kind::Mixed, 3), 64, pace),
            vec![Group::closed_loop(MIXED.to_vec(), 3, Accounts::Any)]
        );
        // The 8 are paced, each on its own connection; the hammer is not.
        let others = Group {
            weights: vec![(Op::Get, 1)],
            workers: 8,
            accounts: Accounts::EachOwn { first: 1 },
            own_connections: true,
            pace,
        };
        assert_eq!(
            groups(&spec(Kind::FairShare, 64), 64, pace),
            vec![
                others.clone(),
                Group::closed_loop(vec![(Op::HammerGet, 1)], 64, Accounts::One(0))
            ]
        );
        assert_eq!(
            groups(&spec(Kind::FairShareIdle, 64), 64, pace),
            vec![others]
        );
    }

    #[test]
    fn only_asked_for_codes_are_expected() {
        assert!(expected(Op::GetMissing, Code::NotFound));
        assert!(!expected(Op::Get, Code::NotFound));
        assert!(!expected(Op::GetMissing, Code::Unavailable));
        assert!(expected(Op::HammerGet, Code::ResourceExhausted));
        assert!(!expected(Op::Get, Code::ResourceExhausted));
    }
}
