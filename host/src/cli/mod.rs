//! The `cofferdam` command line: `run` one tool call, `inspect` a component,
//! `check` and `serve` a config, and look into breakers, budgets, journal and
//! history.
//!
//! Built only on the library's public API. Errors print their whole chain
//! once; the exit code tells what kind of failure it was:
//! 0 success, 1 the tool reported an error, 2 bad usage, configuration or
//! component, 3 the host stopped the tool (a limit or a trap) or a
//! side-effecting tool's outcome is unknown, 4 host failure, 5 the tool is
//! unavailable now (breaker open, bulkhead full): retry later. After retries,
//! the code is the last attempt's.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use cofferdam::{
    CallError, CallOutcome, CallRequest, Effect, ErrorClass, Host, HostConfig, LimitsSpec,
    LoadError, MAX_IDEMPOTENCY_KEY_LEN, Mount, MountMode, Tokens, ToolDescription, ToolPolicy,
};
use cofferdam::{ScheduleConfig, Timestamp, WallClock};

mod admin;
mod bench;
mod schedules;
mod serve;
mod tasks;

#[derive(Parser)]
#[command(
    name = "cofferdam",
    version,
    about = "Runs AI-agent tools as sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the journal lives, with budgets, history, tasks, schedules,
    /// escalations, breaker modes, precompiled artifacts and scratch
    /// directories; a `--config` file's `data_dir` takes its place
    /// [default: $COFFERDAM_DATA_DIR, else $XDG_CACHE_HOME/cofferdam, else ~/.cache/cofferdam]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Where precompiled artifacts live [default: <data-dir>/artifacts]
    #[arg(long, global = true)]
    artifact_dir: Option<PathBuf>,
    /// Read the current time (RFC 3339) from this file instead of the system
    /// clock, for schedules: simulates time in tests and rehearsals.
    #[arg(long, global = true, hide = true)]
    clock_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Call a tool once and print its JSON output.
    Run(Box<RunArgs>),
    /// Show what a component is: name, effect, input schema, imports.
    Inspect(InspectArgs),
    /// Validate a cofferdam.toml: every key, path, policy and tool, naming each error.
    Check {
        /// The config file.
        config: PathBuf,
    },
    /// Show or set operator modes of circuit breakers (remembered in the data dir).
    Breakers {
        #[command(subcommand)]
        command: admin::BreakersCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Budget caps and balances of scopes (tenant:ID, agent:ID, task:ID).
    Budget {
        #[command(subcommand)]
        command: admin::BudgetCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The idempotency journal: keyed calls and their outcomes.
    Journal {
        #[command(subcommand)]
        command: admin::JournalCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The audit history: every attempt, newest first.
    History {
        #[command(flatten)]
        args: admin::HistoryArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Durable multi-step tasks: run a task file, resume, cancel, show progress.
    Tasks {
        #[command(subcommand)]
        command: tasks::TasksCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The escalation queue: what the host could not settle, for a human.
    Escalations {
        #[command(subcommand)]
        command: tasks::EscalationsCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Background runs on a cron in a time zone; `serve` runs them.
    Schedules {
        #[command(subcommand)]
        command: schedules::SchedulesCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Measure this machine: cofferdam's per-call cost, durable throughput,
    /// scaling and load times, each against a baseline in the same run.
    Bench(bench::BenchArgs),
    /// Serve the tools of a cofferdam.toml to MCP clients (stdio, or
    /// streamable HTTP with --http), reloading the config on SIGHUP or change.
    Serve(serve::ServeArgs),
}

/// `--config` of the commands that read or change the stored state.
#[derive(Args)]
struct StoreArgs {
    /// A cofferdam.toml whose `data_dir` holds the state: the store
    /// `cofferdam serve --config` uses [default: --data-dir]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// The component (.wasm); or give --manifest.
    #[arg(required_unless_present = "manifest")]
    component: Option<PathBuf>,
    /// A tool manifest (TOML policy naming its component).
    #[arg(long, conflicts_with = "component")]
    manifest: Option<PathBuf>,
    /// Input as JSON text [default: {}].
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the JSON input from a file (`-` for stdin).
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// Mount a host directory: HOST:GUEST[:ro|rw] (read-only by default). Repeatable.
    #[arg(long = "mount", value_name = "HOST:GUEST[:MODE]")]
    mounts: Vec<String>,
    /// Allow mounts below this directory (default: each --mount's own directory,
    /// and the manifest's directory). Repeatable.
    #[arg(long = "allow-root", value_name = "DIR")]
    allow_roots: Vec<PathBuf>,
    /// Set an environment variable for the tool: KEY=VALUE. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    envs: Vec<String>,
    /// Fuel for the call.
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock deadline, such as 500ms, 2s or 1m.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Memory cap in MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Attempts including the first (1: no retries). Only pure and idempotent
    /// tools (or keyed calls) are retried, and only after transient failures.
    #[arg(long)]
    attempts: Option<u32>,
    /// Idempotency key (1 to 255 bytes): the same key and input run once;
    /// repeats replay the outcome.
    #[arg(long, value_parser = parse_key)]
    key: Option<String>,
    /// Agent making the call (a budget scope).
    #[arg(long)]
    agent: Option<String>,
    /// Task the call belongs to (a budget scope).
    #[arg(long)]
    task: Option<String>,
    /// Tenant (the outermost budget scope).
    #[arg(long)]
    tenant: Option<String>,
    /// Tokens this call may spend at most.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// Override the tool's effect class: pure, idempotent or side-effecting.
    #[arg(long, value_parser = parse_effect)]
    effect: Option<Effect>,
    /// Give the call a private writable /scratch directory.
    #[arg(long)]
    scratch: bool,
    /// Print the whole outcome (or error) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// The component (.wasm).
    component: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit codes; see the module docs.
const EXIT_TOOL_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_STOPPED: u8 = 3;
const EXIT_HOST: u8 = 4;
const EXIT_UNAVAILABLE: u8 = 5;

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COFFERDAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person: logs piped to a file or collector stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_HOST);
        }
    };
    let dirs = Dirs {
        data: cli.data_dir.clone().unwrap_or_else(default_data_dir),
        artifacts: cli.artifact_dir.clone(),
        clock: cli
            .clock_file
            .clone()
            .map(|path| Arc::new(FileClock(path)) as Arc<dyn WallClock>),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args, &dirs).await,
            Command::Inspect(args) => inspect(args, &dirs).await,
            Command::Check { config } => admin::check(&config).await,
            Command::Breakers { command, store } => admin::breakers(command, dirs.store(&store)?),
            Command::Budget { command, store } => admin::budget(command, dirs.store(&store)?).await,
            Command::Journal { command, store } => {
                admin::journal(command, dirs.store(&store)?).await
            }
            Command::History { args, store } => admin::history(args, dirs.store(&store)?),
            Command::Escalations { command, store } => {
                tasks::escalations(command, dirs.store(&store)?).await
            }
            Command::Tasks { command, store } => tasks::tasks(command, &dirs, &store).await,
            Command::Schedules { command, store } => {
                schedules::schedules(command, &dirs, &store).await
            }
            Command::Bench(args) => bench::bench(args).await,
            Command::Serve(args) => serve::serve(args, &dirs).await,
        }
    });
    // The answer is out and the journal committed (dropping the host waits
    // for it): a blocking file operation a guest left behind (a hung network
    // file system, say) must not keep the process alive.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// How long the CLI waits at exit for blocking work still running.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COFFERDAM_DATA_DIR") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("cofferdam");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/cofferdam"),
        None => std::env::temp_dir().join("cofferdam"),
    }
}

/// The data directory, where artifacts live if elsewhere, and the calendar
/// clock when it is simulated.
pub(crate) struct Dirs {
    pub(crate) data: PathBuf,
    pub(crate) artifacts: Option<PathBuf>,
    pub(crate) clock: Option<Arc<dyn WallClock>>,
}

impl Dirs {
    fn host(&self) -> cofferdam::HostBuilder {
        self.apply(Host::builder().data_dir(&self.data))
    }

    /// The artifact directory and clock over `builder`.
    pub(crate) fn apply(&self, mut builder: cofferdam::HostBuilder) -> cofferdam::HostBuilder {
        if let Some(dir) = &self.artifacts {
            builder = builder.artifact_dir(dir);
        }
        if let Some(clock) = &self.clock {
            builder = builder.wall_clock(Arc::clone(clock));
        }
        builder
    }

    /// The stored state an operator command reads or changes: with
    /// `--config`, the store that file's host uses (its `data_dir`, else
    /// `--data-dir`, as `serve` does) under its schedule rules.
    fn store(&self, store: &StoreArgs) -> Result<Store> {
        let Some(path) = &store.config else {
            return Ok(Store {
                data_dir: self.data.clone(),
                builder: self.host(),
            });
        };
        let config = HostConfig::from_file(path)?;
        let data_dir = config.data_dir.unwrap_or_else(|| self.data.clone());
        let builder = Host::builder()
            .data_dir(&data_dir)
            .schedule_config(config.schedules.apply(ScheduleConfig::default()));
        Ok(Store {
            data_dir,
            builder: self.apply(builder),
        })
    }
}

/// Where an operator command finds the stored state: [`Dirs::store`].
struct Store {
    data_dir: PathBuf,
    builder: cofferdam::HostBuilder,
}

impl Store {
    /// A host over the store, with no tools loaded.
    fn host(self) -> Result<Host> {
        Ok(self.builder.build()?)
    }
}

/// Reads, checks and loads a `cofferdam.toml`: the host with every tool.
/// Without `data_dir` in the file, the CLI's data directory holds the journal.
pub(crate) async fn configured_host(path: &Path, dirs: &Dirs) -> Result<(HostConfig, Host)> {
    let config = HostConfig::from_file(path)?;
    let problems = config.check();
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        bail!("{}: {} problem(s)", path.display(), problems.len());
    }
    let mut builder = config.builder();
    if config.data_dir.is_none() {
        builder = builder.data_dir(&dirs.data);
    }
    let host = dirs.apply(builder).build()?;
    for (name, result) in config.load(&host).await {
        result.with_context(|| format!("tools.{name} in {}", path.display()))?;
    }
    Ok((config, host))
}

/// A calendar clock read from a file (RFC 3339) at every look: `--clock-file`.
#[derive(Debug)]
struct FileClock(PathBuf);

impl WallClock for FileClock {
    fn now(&self) -> Timestamp {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.trim().parse().unwrap_or_else(|e| {
            tracing::warn!(file = %self.0.display(), error = %e, "unreadable clock file; using the system clock");
            Timestamp::now()
        })
    }
}

async fn run(args: RunArgs, dirs: &Dirs) -> Result<ExitCode> {
    let (component, mut policy, mut roots) = match &args.manifest {
        Some(manifest) => {
            let policy = ToolPolicy::from_file(manifest)?;
            let component = policy
                .component
                .clone()
                .with_context(|| format!("manifest {} names no `component`", manifest.display()))?;
            let dir = manifest.parent().unwrap_or(Path::new(".")).to_owned();
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            (component, policy, vec![dir])
        }
        None => {
            let component = args
                .component
                .clone()
                .context("give a component or --manifest")?;
            (component, ToolPolicy::default(), Vec::new())
        }
    };
    for spec in &args.mounts {
        let mount = parse_mount(spec)?;
        roots.push(mount.host.clone());
        policy.mounts.push(mount);
    }
    for pair in &args.envs {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--env `{pair}` is not KEY=VALUE"))?;
        policy.env.insert(key.to_owned(), value.to_owned());
    }
    policy.scratch |= args.scratch;
    policy.retry.max_attempts = args.attempts.or(policy.retry.max_attempts);
    policy.effect = args.effect.or(policy.effect);
    policy.limits = LimitsSpec {
        fuel: args.fuel.or(policy.limits.fuel),
        timeout_ms: args
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
            .or(policy.limits.timeout_ms),
        memory_mib: args.memory_mib.or(policy.limits.memory_mib),
        ..policy.limits
    };
    if args.allow_roots.is_empty() {
        // Each mount is its own root, as written: a path that goes through a
        // symlink (swapped in by another tool's writable mount, say) would
        // otherwise become a root wherever it points now.
        for mount in &policy.mounts {
            through_symlink(&mount.host)?;
        }
    } else {
        roots = args.allow_roots.clone();
    }
    let input = match (&args.input, &args.input_file) {
        (Some(input), _) => input.clone(),
        (None, Some(path)) if path == Path::new("-") => {
            std::io::read_to_string(std::io::stdin()).context("reading input from stdin")?
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading input file {}", path.display()))?,
        (None, None) => "{}".to_owned(),
    };

    let home = std::env::var_os("HOME").map(PathBuf::from);
    for mount in &policy.mounts {
        if let Some(what) = broad_mount(&mount.host, home.as_deref()) {
            eprintln!(
                "warning: --mount {} gives the tool {what}; mount only the directory it needs",
                mount.host.display()
            );
        }
    }
    let mut builder = dirs.host();
    for root in roots {
        builder = builder.allow_root(root);
    }
    let host = builder.build()?;
    let tool = match host.load_file(&component, policy).await {
        Ok(tool) => tool,
        Err(error) => return Ok(report_load_error(&component, error)),
    };
    let request = CallRequest {
        idempotency_key: args.key.clone(),
        agent: args.agent.clone(),
        task_id: args.task.clone(),
        tenant: args.tenant.clone(),
        max_tokens: args.max_tokens.map(Tokens),
        ..CallRequest::new(tool.name.as_str(), input)
    };
    let result = host.call(request).await;
    Ok(report_call(&tool, result, args.json))
}

/// Refuses a mount path (taken as its own root) that resolves somewhere else
/// than it says: one of its components is a symlink.
fn through_symlink(host: &Path) -> Result<()> {
    let written = std::path::absolute(host)
        .with_context(|| format!("--mount {}: cannot make the path absolute", host.display()))?;
    let written: PathBuf = written.components().collect();
    let Ok(real) = host.canonicalize() else {
        // A missing directory is the host's to report.
        return Ok(());
    };
    if lexically_normal(&written) != real {
        bail!(
            "--mount {}: the path goes through a symlink and resolves to {}; mount the real \
             directory, or pass --allow-root to say which tree mounts may resolve into",
            host.display(),
            real.display()
        );
    }
    Ok(())
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether a mount hands the tool far more than a tool needs: the whole file
/// system or the user's home. (A mount that contains the data dir is refused
/// by the host itself.)
fn broad_mount(host: &Path, home: Option<&Path>) -> Option<&'static str> {
    let canonical = host.canonicalize().ok()?;
    if canonical == Path::new("/") {
        return Some("the whole file system");
    }
    let home = home.and_then(|h| h.canonicalize().ok());
    (home.as_deref() == Some(canonical.as_path())).then_some("your whole home directory")
}

fn report_load_error(component: &Path, error: LoadError) -> ExitCode {
    let error = anyhow::Error::new(error).context(format!("cannot load {}", component.display()));
    eprintln!("error: {error:#}");
    ExitCode::from(EXIT_USAGE)
}

fn report_call(
    tool: &ToolDescription,
    result: Result<CallOutcome, CallError>,
    json: bool,
) -> ExitCode {
    match result {
        Ok(outcome) => {
            if json {
                let mut value = serde_json::to_value(&outcome).unwrap_or_default();
                value["ok"] = true.into();
                value["output"] = outcome.output_json();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                let pretty = serde_json::to_string_pretty(&outcome.output_json())
                    .unwrap_or_else(|_| outcome.output.clone());
                println!("{pretty}");
                let mut err = std::io::stderr().lock();
                for log in &outcome.logs {
                    let _ = writeln!(err, "[{}] {}", log.level, log.message);
                }
                for (name, text, cut) in [
                    ("stdout", &outcome.stdout, outcome.stdout_truncated),
                    ("stderr", &outcome.stderr, outcome.stderr_truncated),
                ] {
                    if !text.is_empty() {
                        let note = if cut { ", truncated by the host" } else { "" };
                        let _ = writeln!(
                            err,
                            "tool {name} ({} bytes{note}): {}",
                            text.len(),
                            preview(text.trim_end())
                        );
                    }
                }
                let retried = if outcome.replayed {
                    ", replayed from the journal (not run again)".to_owned()
                } else if outcome.attempts > 1 {
                    let classes: Vec<&str> =
                        outcome.failed_attempts.iter().map(|c| c.as_str()).collect();
                    format!(
                        ", attempt {} after {}",
                        outcome.attempts,
                        classes.join(", ")
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    err,
                    "ok: {} {} in {:.2} ms, {} fuel, {} tokens{retried} (artifact {:?} in {:.2} ms)",
                    tool.name,
                    tool.version,
                    outcome.duration.as_secs_f64() * 1e3,
                    outcome.fuel_used.0,
                    outcome.tokens.0,
                    tool.artifact.source,
                    tool.artifact.elapsed.as_secs_f64() * 1e3,
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            let class = error.class();
            if json {
                let retry_after = error.retry_after().map(|d| d.as_millis());
                let value = serde_json::json!({
                    "ok": false,
                    "error": {
                        "class": class,
                        "cause": error.cause_class(),
                        "message": error.to_string(),
                        "retry_after_ms": retry_after,
                        "replayed": error.is_replayed(),
                    },
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                eprintln!("error [{}]: {error}", class.as_str());
            }
            ExitCode::from(exit_code(&error))
        }
    }
}

/// The first 400 bytes of `text`, cut at a char boundary.
fn preview(text: &str) -> String {
    const MAX: usize = 400;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (use --json for all of it)", &text[..end])
}

fn exit_code(error: &CallError) -> u8 {
    match error {
        CallError::RetriesExhausted { last, .. } => return exit_code(last),
        CallError::CircuitOpen { .. } | CallError::BulkheadFull { .. } => return EXIT_UNAVAILABLE,
        _ => {}
    }
    match error.class() {
        ErrorClass::InvalidInput
        | ErrorClass::Transient
        | ErrorClass::RateLimited
        | ErrorClass::Permanent => EXIT_TOOL_ERROR,
        ErrorClass::UnknownTool => EXIT_USAGE,
        ErrorClass::Host => EXIT_HOST,
        _ => EXIT_STOPPED,
    }
}

async fn inspect(args: InspectArgs, dirs: &Dirs) -> Result<ExitCode> {
    let host = dirs.host().build()?;
    let tool = match host.load_file(&args.component, ToolPolicy::default()).await {
        Ok(tool) => tool,
        Err(error) => return Ok(report_load_error(&args.component, error)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tool)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("name         {}", tool.name);
    println!("version      {}", tool.version);
    println!("description  {}", tool.description);
    println!("effect       {}", tool.effect);
    println!("sha256       {}", tool.digest);
    println!(
        "artifact     {:?} in {:.2} ms",
        tool.artifact.source,
        tool.artifact.elapsed.as_secs_f64() * 1e3
    );
    println!("imports");
    for import in &tool.imports {
        println!("  {import}");
    }
    println!("input schema");
    println!("{}", serde_json::to_string_pretty(&tool.input_schema)?);
    Ok(ExitCode::SUCCESS)
}

fn parse_effect(text: &str) -> Result<Effect, String> {
    match text {
        "pure" => Ok(Effect::Pure),
        "idempotent" => Ok(Effect::Idempotent),
        "side-effecting" => Ok(Effect::SideEffecting),
        _ => Err(format!(
            "`{text}` is not one of pure, idempotent, side-effecting"
        )),
    }
}

/// `HOST:GUEST[:ro|rw]`.
fn parse_mount(spec: &str) -> Result<Mount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, guest, mode) = match parts.as_slice() {
        [host, guest] => (host, guest, MountMode::ReadOnly),
        [host, guest, "ro"] => (host, guest, MountMode::ReadOnly),
        [host, guest, "rw"] => (host, guest, MountMode::ReadWrite),
        [_, _, mode] => bail!("--mount `{spec}`: mode `{mode}` is neither `ro` nor `rw`"),
        _ => bail!("--mount `{spec}` is not HOST:GUEST[:ro|rw]"),
    };
    Ok(Mount {
        host: PathBuf::from(host),
        guest: (*guest).to_owned(),
        mode,
    })
}

/// `--key`: 1 to 255 bytes, the host's rule, checked before anything runs.
fn parse_key(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!(
            "an idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, not {}",
            text.len()
        ));
    }
    Ok(text.to_owned())
}

/// `250ms`, `2s`, `1m`, `1h`, or a bare number of milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 2s"))?;
    let duration = match unit {
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{text}`: unit must be ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("the timeout must be greater than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::tasks::TasksCommand;
    use super::*;

    #[test]
    fn a_mount_path_through_a_symlink_is_refused_as_its_own_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        assert!(through_symlink(&real).is_ok());
        assert!(through_symlink(&dir.path().join("real/../real/.")).is_ok());
        let error = through_symlink(&dir.path().join("link")).expect_err("through a symlink");
        assert!(
            error.to_string().contains("goes through a symlink"),
            "{error}"
        );
    }

    #[test]
    fn mounting_the_root_or_the_home_directory_is_warned_about() {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(home.path().join("docs")).expect("mkdir");
        assert_eq!(
            broad_mount(Path::new("/"), None),
            Some("the whole file system")
        );
        assert_eq!(
            broad_mount(home.path(), Some(home.path())),
            Some("your whole home directory")
        );
        assert_eq!(
            broad_mount(&home.path().join("docs"), Some(home.path())),
            None
        );
    }

    #[test]
    fn mounts_parse_with_default_read_only() {
        let m = parse_mount("/a:/data").expect("valid");
        assert_eq!(
            (m.host, m.guest.as_str(), m.mode),
            (PathBuf::from("/a"), "/data", MountMode::ReadOnly)
        );
        assert_eq!(
            parse_mount("/a:/d:rw").expect("valid").mode,
            MountMode::ReadWrite
        );
        assert!(parse_mount("/a:/d:rwx").is_err());
        assert!(parse_mount("/a").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    fn parse(args: &str) -> Cli {
        Cli::try_parse_from(args.split_whitespace()).unwrap_or_else(|e| panic!("{args}: {e}"))
    }

    #[test]
    fn every_operator_command_takes_a_config() {
        let config = Some(PathBuf::from("c.toml"));
        for args in [
            "cofferdam breakers list --config c.toml",
            "cofferdam breakers --config c.toml set hello normal",
            "cofferdam budget set agent:a --cap 8 --config c.toml",
            "cofferdam budget show --json --config c.toml",
            "cofferdam journal list --config c.toml",
            "cofferdam journal reap --config c.toml",
            "cofferdam history --config c.toml --agent a",
            "cofferdam escalations list --config c.toml",
            "cofferdam tasks status t1 --config c.toml",
            "cofferdam tasks list --config c.toml",
            "cofferdam schedules list --config c.toml",
            "cofferdam schedules pause s1 --config c.toml",
        ] {
            let store = match parse(args).command {
                Command::Breakers { store, .. }
                | Command::Budget { store, .. }
                | Command::Journal { store, .. }
                | Command::History { store, .. }
                | Command::Escalations { store, .. }
                | Command::Tasks { store, .. }
                | Command::Schedules { store, .. } => store,
                _ => panic!("{args}: not an operator command"),
            };
            assert_eq!(store.config, config, "{args}");
        }
        // The commands that call tools still require theirs.
        let Command::Tasks {
            command: TasksCommand::Run { config: run, .. },
            ..
        } = parse("cofferdam tasks run trip.toml --config c.toml").command
        else {
            panic!("tasks run");
        };
        assert_eq!(run, PathBuf::from("c.toml"));
        assert!(Cli::try_parse_from(["cofferdam", "tasks", "run", "trip.toml"]).is_err());
    }

    #[test]
    fn no_help_states_a_default_twice() {
        use clap::CommandFactory as _;
        // clap appends `[default: …]` to an option's help; its doc, and its
        // command's description, must not say it again.
        fn walk(command: &clap::Command, path: &str) {
            let about = command
                .get_long_about()
                .or(command.get_about())
                .map(ToString::to_string)
                .unwrap_or_default();
            let shown = command
                .get_arguments()
                .filter(|a| a.get_action().takes_values() && !a.is_hide_default_value_set());
            for arg in shown {
                let doc = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                for value in arg.get_default_values() {
                    let value = value.to_string_lossy();
                    assert!(
                        !doc.contains("default"),
                        "`{path} --{}` says its default in its doc: {doc}",
                        arg.get_id()
                    );
                    assert!(
                        !about.contains(&format!("default {value}"))
                            && !about.contains(&format!("default: {value}")),
                        "`{path}` says the default of --{} in its description: {about}",
                        arg.get_id()
                    );
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let mut cli = Cli::command();
        cli.build();
        walk(&cli, "cofferdam");
    }

    #[test]
    fn idempotency_keys_are_checked_against_the_rule() {
        assert_eq!(parse_key("order-18"), Ok("order-18".to_owned()));
        assert_eq!(parse_key(&"k".repeat(255)).map(|k| k.len()), Ok(255));
        assert_eq!(
            parse_key(""),
            Err("an idempotency key must be 1 to 255 bytes, not 0".to_owned())
        );
        assert!(parse_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("40"), Ok(Duration::from_millis(40)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
