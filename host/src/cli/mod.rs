//! The `cofferdam` command line: `run` one tool call, `inspect` a component,
//! `check` and `serve` a config, and look into breakers, budgets, journal and
//! history.
//!
//! Built only on the library's public API. Errors print their whole chain
//! once; the exit code tells what kind of failure it was:
//! 0 success, 1 the tool reported an error, 2 bad usage, configuration or
//! component, 3 the host stopped the tool (a limit or a trap) or a
//! side-effecting tool's outcome is unknown, 4 host failure, 5 the tool or
//! the shared store is unavailable now (breaker open, bulkhead full, the
//! database does not answer): retry later. After retries, the code is the
//! last attempt's.
//!
//! This module holds the command tree, `main` and the plumbing the command
//! groups share (directories, the store, a configured host, exit codes,
//! durations); each group's arguments and handlers live in a child module
//! that imports from here and from no other group.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use cofferdam::{Host, HostConfig, ScheduleConfig, Timestamp, WallClock};

mod admin;
mod bench;
mod migrate;
mod run;
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
    /// Keep the durable state in this PostgreSQL database
    /// (`postgres://user@host/db`), shared with every replica, instead of
    /// the data dir's journal; overrides a config's `[store] url`
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
    /// Read the current time (RFC 3339) from this file instead of the system
    /// clock, for schedules: simulates time in tests and rehearsals.
    #[arg(long, global = true, hide = true)]
    clock_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Call a tool once and print its JSON output.
    Run(Box<run::RunArgs>),
    /// Show what a component is: name, effect, input schema, imports.
    Inspect(run::InspectArgs),
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
    /// Tools' durable state (`[tools.NAME.state]` buckets): list, read,
    /// delete keys of one scope.
    State {
        #[command(subcommand)]
        command: admin::StateCommand,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make a bearer token for an MCP client over HTTP: prints the token
    /// (give it to the client) and the `[[clients]]` entry holding its digest.
    Token {
        /// The client's name, for the entry.
        #[arg(long, default_value = "my-agent")]
        name: String,
        /// The agent the client acts as.
        #[arg(long)]
        agent: Option<String>,
    },
    /// The store itself: move the data dir's journal into PostgreSQL.
    Store {
        #[command(subcommand)]
        command: migrate::StoreCommand,
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
        store: cli.store.clone(),
        clock: cli
            .clock_file
            .clone()
            .map(|path| Arc::new(FileClock(path)) as Arc<dyn WallClock>),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(*args, &dirs).await,
            Command::Inspect(args) => run::inspect(args, &dirs).await,
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
            Command::State { command, store } => admin::state(command, dirs.store(&store)?).await,
            Command::Token { name, agent } => serve::token(&name, agent.as_deref()),
            Command::Store { command, store } => migrate::store(command, &dirs.store(&store)?),
            Command::Bench(args) => bench::bench(args, dirs.store.clone()).await,
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
struct Dirs {
    data: PathBuf,
    artifacts: Option<PathBuf>,
    /// `--store`: a shared database instead of the data dir's journal.
    store: Option<String>,
    clock: Option<Arc<dyn WallClock>>,
}

impl Dirs {
    fn host(&self) -> cofferdam::HostBuilder {
        self.apply(Host::builder().data_dir(&self.data))
    }

    /// The artifact directory and clock over `builder`.
    fn apply(&self, mut builder: cofferdam::HostBuilder) -> cofferdam::HostBuilder {
        if let Some(dir) = &self.artifacts {
            builder = builder.artifact_dir(dir);
        }
        if let Some(url) = &self.store {
            builder = builder.store_url(url);
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
                shared: self.store.is_some(),
            });
        };
        let config = HostConfig::from_file(path)?;
        let data_dir = config.data_dir.unwrap_or_else(|| self.data.clone());
        let mut builder = Host::builder()
            .data_dir(&data_dir)
            .schedule_config(config.schedules.apply(ScheduleConfig::default()))
            .prices(config.prices.clone());
        if let Some(url) = &config.store.url {
            builder = builder.store_url(url);
        }
        Ok(Store {
            data_dir,
            builder: self.apply(builder),
            shared: self.store.is_some() || config.store.url.is_some(),
        })
    }
}

/// Where an operator command finds the stored state: [`Dirs::store`].
struct Store {
    data_dir: PathBuf,
    builder: cofferdam::HostBuilder,
    /// Whether the state is in a shared database (`--store`, `[store]`)
    /// rather than the data dir.
    shared: bool,
}

impl Store {
    /// A host over the store, with no tools loaded.
    fn host(self) -> Result<Host> {
        Ok(self.builder.build()?)
    }
}

/// Reads, checks and loads a `cofferdam.toml`: the host with every tool.
/// Without `data_dir` in the file, the CLI's data directory holds the journal.
async fn configured_host(path: &Path, dirs: &Dirs) -> Result<(HostConfig, Host)> {
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

/// `250ms`, `2s`, `1m`, `1h`, or a bare number of milliseconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// An error and its causes on one line, as `{:#}` prints an anyhow chain.
pub(super) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    anyhow::Chain::new(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::tasks::TasksCommand;
    use super::*;

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
            "cofferdam store migrate --to postgres://db/x --config c.toml",
        ] {
            let store = match parse(args).command {
                Command::Breakers { store, .. }
                | Command::Budget { store, .. }
                | Command::Journal { store, .. }
                | Command::History { store, .. }
                | Command::Escalations { store, .. }
                | Command::Tasks { store, .. }
                | Command::Schedules { store, .. }
                | Command::State { store, .. }
                | Command::Store { store, .. } => store,
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
    fn the_store_flag_is_global() {
        for args in [
            "cofferdam --store postgres://db/x journal list",
            "cofferdam journal list --store postgres://db/x",
            "cofferdam serve --config c.toml --store postgres://db/x",
        ] {
            assert_eq!(
                parse(args).store.as_deref(),
                Some("postgres://db/x"),
                "{args}"
            );
        }
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
