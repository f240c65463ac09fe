//! The operator commands that call no tool: `breakers`, `budget`, `journal`
//! and `history` read or change the stored state through the library's
//! host, and `check` validates a config and loads its tools.
//!
//! They print what the library returns; none keeps state of its own.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use cofferdam::{
    BreakerMode, BudgetCap, HistoryQuery, Host, HostConfig, KeyState, ScopeId, StoredOutcome,
    Tokens,
};

use super::{EXIT_USAGE, Store, parse_duration};

#[derive(Subcommand)]
pub(super) enum BreakersCommand {
    /// List the breaker modes operators have set.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a tool's breaker mode: normal, disabled, forced-open or metrics-only.
    Set {
        /// The tool's name.
        tool: String,
        /// The mode.
        #[arg(value_parser = parse_breaker_mode)]
        mode: BreakerMode,
    },
}

pub(super) fn breakers(command: BreakersCommand, store: Store) -> Result<ExitCode> {
    // A shared store is asked through a host; the embedded one's modes live
    // in a file beside the journal, so a serving host need not let go of it.
    let data_dir = &store.data_dir.clone();
    let shared = if store.shared {
        Some(store.host()?)
    } else {
        None
    };
    match command {
        BreakersCommand::List { json } => {
            let modes = match &shared {
                Some(host) => host.stored_breaker_modes(),
                None => Host::remembered_breaker_modes(data_dir),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&modes)?);
            } else if modes.is_empty() {
                println!("no breaker modes set: every tool's breaker runs normally");
            } else {
                for (tool, mode) in &modes {
                    println!("{tool:<24} {}", breaker_mode_name(*mode));
                }
            }
        }
        BreakersCommand::Set { tool, mode } => {
            cofferdam::ToolName::new(&tool)?;
            match &shared {
                Some(host) => host
                    .store_breaker_mode(&tool, mode)
                    .context("saving the breaker mode in the shared store")?,
                None => Host::remember_breaker_mode(data_dir, &tool, mode).with_context(|| {
                    format!("saving the breaker mode in {}", data_dir.display())
                })?,
            }
            println!("breaker of `{tool}` is now {}", breaker_mode_name(mode));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn breaker_mode_name(mode: BreakerMode) -> &'static str {
    match mode {
        BreakerMode::Normal => "normal",
        BreakerMode::Disabled => "disabled",
        BreakerMode::ForcedOpen => "forced-open",
        BreakerMode::MetricsOnly => "metrics-only",
    }
}

fn parse_breaker_mode(text: &str) -> Result<BreakerMode, String> {
    [
        BreakerMode::Normal,
        BreakerMode::Disabled,
        BreakerMode::ForcedOpen,
        BreakerMode::MetricsOnly,
    ]
    .into_iter()
    .find(|m| breaker_mode_name(*m) == text)
    .ok_or_else(|| format!("`{text}` is not one of normal, disabled, forced-open, metrics-only"))
}

#[derive(Subcommand)]
pub(super) enum BudgetCommand {
    /// Show every capped scope's balance.
    Show {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a scope's cap (spending so far is kept).
    Set {
        /// The scope: tenant:ID, agent:ID or task:ID.
        scope: String,
        /// Hard cap in tokens.
        #[arg(
            long,
            required_unless_present = "cap_money",
            conflicts_with = "cap_money"
        )]
        cap: Option<u64>,
        /// Hard cap in money, such as "2.00 USD": tokens at the config's
        /// [prices] default (the ledger counts every tool's tokens alike).
        #[arg(long, value_name = "AMOUNT")]
        cap_money: Option<cofferdam::Money>,
        /// Percent of the cap at which a warning is logged.
        #[arg(long, default_value_t = 80)]
        soft_percent: u8,
        /// Reset spending every window, such as 1h or 24h.
        #[arg(long, value_parser = parse_duration)]
        window: Option<Duration>,
    },
    /// Charge tokens spent outside cofferdam (LLM calls) to a capped scope.
    Charge {
        /// The scope.
        scope: String,
        /// Tokens.
        tokens: u64,
    },
    /// Remove a scope's cap and balance.
    Remove {
        /// The scope.
        scope: String,
    },
}

pub(super) async fn budget(command: BudgetCommand, store: Store) -> Result<ExitCode> {
    let host = store.host()?;
    let budgets = host.budgets();
    match command {
        BudgetCommand::Show { json } => {
            let list = budgets.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no budget caps set");
            } else {
                let prices = host.prices();
                let money = prices.default.is_some();
                println!(
                    "{:<28} {:>12} {:>12} {:>12} {:>12}{}",
                    "scope",
                    "cap",
                    "spent",
                    "reserved",
                    "left",
                    if money {
                        "   (money at the default price: spent / left)"
                    } else {
                        ""
                    }
                );
                for b in list {
                    let in_money = match (prices.ledger_money(b.spent), prices.ledger_money(b.left))
                    {
                        (Some(spent), Some(left)) => format!("   {spent} / {left}"),
                        _ => String::new(),
                    };
                    println!(
                        "{:<28} {:>12} {:>12} {:>12} {:>12}{in_money}",
                        b.scope, b.cap.hard.0, b.spent.0, b.reserved.0, b.left.0
                    );
                }
            }
        }
        BudgetCommand::Set {
            scope,
            cap,
            cap_money,
            soft_percent,
            window,
        } => {
            let scope: ScopeId = scope.parse()?;
            let tokens = match (cap, &cap_money) {
                (Some(tokens), _) => Tokens(tokens),
                (None, Some(money)) => host
                    .prices()
                    .ledger_tokens(money)
                    .context("--cap-money needs [prices] default in the same currency")?,
                (None, None) => bail!("give --cap or --cap-money"),
            };
            let cap = BudgetCap {
                hard: tokens,
                soft_percent,
                window_ms: window.map(|w| w.as_millis() as u64),
            };
            budgets.set_cap(&scope, cap).await?;
            match &cap_money {
                Some(money) => println!(
                    "budget of `{scope}` capped at {} tokens ({money} at the default price)",
                    cap.hard.0
                ),
                None => println!("budget of `{scope}` capped at {} tokens", cap.hard.0),
            }
        }
        BudgetCommand::Charge { scope, tokens } => {
            let scope: ScopeId = scope.parse()?;
            let status = budgets.charge(&scope, Tokens(tokens)).await?;
            println!(
                "`{scope}`: {} spent, {} left",
                status.spent.0, status.left.0
            );
        }
        BudgetCommand::Remove { scope } => {
            let scope: ScopeId = scope.parse()?;
            budgets.remove(&scope).await?;
            println!("budget of `{scope}` removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub(super) enum JournalCommand {
    /// List idempotency records.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the records of one idempotency key (in every scope and tool) as JSON.
    Show {
        /// The key.
        key: String,
    },
    /// Delete finished records older than an age.
    Reap {
        /// Age, such as 24h or 30m.
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        older_than: Duration,
    },
}

pub(super) async fn journal(command: JournalCommand, store: Store) -> Result<ExitCode> {
    let host = store.host()?;
    match command {
        JournalCommand::List { json } => {
            let entries = host.journal_entries()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else if entries.is_empty() {
                println!("no keyed calls recorded");
            } else {
                for e in entries {
                    let state = match &e.state {
                        KeyState::InProgress { .. } => "in-progress".to_owned(),
                        KeyState::Completed {
                            outcome: StoredOutcome::Output { .. },
                        } => "completed".to_owned(),
                        KeyState::Completed {
                            outcome: StoredOutcome::Error { class, .. },
                        } => {
                            format!("completed with {}", class.as_str())
                        }
                        KeyState::Unknown { reason } => format!("UNKNOWN: {reason}"),
                    };
                    let scope = if e.scope.is_empty() {
                        "-"
                    } else {
                        e.scope.as_str()
                    };
                    println!("{scope:<20} {:<16} {:<32} {state}", e.tool, e.key);
                }
            }
        }
        JournalCommand::Show { key } => {
            let entries: Vec<_> = host
                .journal_entries()?
                .into_iter()
                .filter(|e| e.key == key)
                .collect();
            if entries.is_empty() {
                bail!("no journal record has key `{key}`");
            }
            println!("{}", serde_json::to_string_pretty(&entries)?);
        }
        JournalCommand::Reap { older_than } => {
            let reaped = host.reap_journal(older_than).await?;
            println!("removed {reaped} finished records");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub(super) struct HistoryArgs {
    /// Only this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only this task.
    #[arg(long)]
    task: Option<String>,
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// At most this many attempts [default: 100].
    #[arg(long)]
    limit: Option<usize>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn history(args: HistoryArgs, store: Store) -> Result<ExitCode> {
    let host = store.host()?;
    let query = HistoryQuery {
        tool: args.tool,
        task: args.task,
        agent: args.agent,
        limit: args.limit,
        ..HistoryQuery::default()
    };
    let records = host.history(&query)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &records {
        let replayed = if r.replayed { " (replayed)" } else { "" };
        let cost = host
            .prices()
            .cost(&r.tool, cofferdam::Tokens(r.tokens))
            .map_or_else(String::new, |c| format!(" {c}"));
        println!(
            "{} {:<16} {:<28} #{} {:<20} {:>12} fuel {:>8} tokens{cost}{replayed}",
            r.started_ms, r.tool, r.call_id, r.attempt, r.status, r.fuel, r.tokens
        );
    }
    let totals = host.totals(&query)?;
    for (scope, tokens) in totals {
        println!("total {scope}: {tokens} tokens");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn check(path: &Path) -> Result<ExitCode> {
    let config = HostConfig::from_file(path)?;
    let problems = config.check();
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        eprintln!("{}: {} problem(s)", path.display(), problems.len());
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    // Loading checks what the file alone cannot: pins, imports, `describe`.
    let host = config.builder().build()?;
    let mut failed = 0;
    for (name, result) in config.load(&host).await {
        match result {
            Ok(tool) => println!(
                "ok  tools.{name}: {} {} ({})",
                tool.name, tool.version, tool.effect
            ),
            Err(error) => {
                failed += 1;
                eprintln!("error: tools.{name}: {:#}", anyhow::Error::new(error));
            }
        }
    }
    if failed > 0 {
        eprintln!("{}: {failed} tool(s) failed to load", path.display());
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    println!("{}: ok, {} tool(s)", path.display(), config.tools.len());
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub(super) enum StateCommand {
    /// The scopes of BUCKET with their keys and bytes; with --scope, its keys.
    List {
        /// The bucket.
        bucket: String,
        /// One scope: `tool`, `owner:AGENT` or `schedule:OWNER/NAME`.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Print the value of KEY (as text when it is UTF-8).
    Get {
        bucket: String,
        key: String,
        /// The scope: `tool`, `owner:AGENT` or `schedule:OWNER/NAME`.
        #[arg(long)]
        scope: String,
    },
    /// Delete KEY (deleting an absent key is fine).
    Delete {
        bucket: String,
        key: String,
        /// The scope: `tool`, `owner:AGENT` or `schedule:OWNER/NAME`.
        #[arg(long)]
        scope: String,
    },
}

fn state_space(bucket: &str, scope: &str) -> Result<String> {
    let valid = scope == "tool"
        || ["owner:", "schedule:"]
            .iter()
            .any(|p| scope.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
    if !valid {
        bail!("--scope must be `tool`, `owner:AGENT` or `schedule:OWNER/NAME`, not `{scope}`");
    }
    Ok(format!("{bucket}/{scope}"))
}

pub(super) async fn state(command: StateCommand, store: Store) -> Result<ExitCode> {
    let host = store.host()?;
    let state = host.state();
    match command {
        StateCommand::List {
            bucket,
            scope: None,
        } => {
            let prefix = format!("{bucket}/");
            let mut any = false;
            for (space, usage) in state.spaces()? {
                if let Some(scope) = space.strip_prefix(&prefix) {
                    any = true;
                    println!(
                        "{scope:<40} {:>6} keys {:>10} bytes",
                        usage.keys, usage.bytes
                    );
                }
            }
            if !any {
                eprintln!("bucket `{bucket}` holds nothing");
            }
        }
        StateCommand::List {
            bucket,
            scope: Some(scope),
        } => {
            for key in state.keys(&state_space(&bucket, &scope)?)? {
                println!("{key}");
            }
        }
        StateCommand::Get { bucket, key, scope } => {
            match state.get(&state_space(&bucket, &scope)?, &key)? {
                Some(value) => match String::from_utf8(value) {
                    Ok(text) => println!("{text}"),
                    Err(e) => println!("{}", hex::encode(e.into_bytes())),
                },
                None => {
                    eprintln!("no key `{key}` in {bucket}/{scope}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        StateCommand::Delete { bucket, key, scope } => {
            let existed = state.delete(&state_space(&bucket, &scope)?, &key).await?;
            println!("{}", if existed { "deleted" } else { "no such key" });
        }
    }
    Ok(ExitCode::SUCCESS)
}
