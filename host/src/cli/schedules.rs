//! `cofferdam schedules`: create, list, pause, resume and delete background
//! runs on a cron, and show their history.
//!
//! `create` loads the config's tools to check them; nothing here fires a
//! run: `cofferdam serve` runs the schedule runner that does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use cofferdam::{
    CatchUp, RunStatus, Schedule, ScheduleSpec, ScheduleStatus, ScheduleTarget, TaskSpec, Tokens,
};

use super::{Dirs, StoreArgs, configured_host, parse_duration, preview};

#[derive(Subcommand)]
pub(super) enum SchedulesCommand {
    /// Create a schedule (validated: cron, zone, interval, quota, budget,
    /// tools) and show its next run.
    Create(Box<CreateScheduleArgs>),
    /// List schedules with their next run.
    List {
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule as JSON.
    Show {
        /// Its name.
        name: String,
    },
    /// Pause a schedule (pausing a paused one succeeds).
    Pause {
        /// Its name.
        name: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a schedule from now on (resuming an active one succeeds).
    Resume {
        /// Its name.
        name: String,
    },
    /// Delete a schedule and its history (deleting a deleted one succeeds).
    Delete {
        /// Its name.
        name: String,
    },
    /// A schedule's runs: slot, status, start, end, cost; then the totals.
    History {
        /// Its name.
        name: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Notifications of runs' ends ([notify] sinks): pending, delivered or
    /// dead, with attempts and the last error. `cofferdam serve` delivers them.
    Notifications {
        /// Only this schedule's.
        #[arg(long)]
        schedule: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub(super) struct CreateScheduleArgs {
    /// Unique name (A-Z a-z 0-9 . _ -).
    name: String,
    /// The host config whose tools it calls (checked now, and at each run).
    #[arg(long)]
    config: PathBuf,
    /// Who it belongs to (quotas count per owner; runs are made as this agent).
    #[arg(long)]
    owner: String,
    /// The tenant runs are charged to as well (its budget caps apply).
    #[arg(long)]
    tenant: Option<String>,
    /// Five-field cron expression, such as "0 9 * * mon-fri".
    #[arg(long)]
    cron: String,
    /// IANA time zone the cron is read in.
    #[arg(long, default_value = "UTC")]
    zone: String,
    /// Call this tool.
    #[arg(long, required_unless_present = "task", conflicts_with = "task")]
    tool: Option<String>,
    /// The tool's input (JSON).
    #[arg(long, default_value = "{}", requires = "tool")]
    input: String,
    /// Run this task file (TOML or JSON) instead; each run's task id is its
    /// id followed by the slot.
    #[arg(long)]
    task: Option<PathBuf>,
    /// Tokens one run may spend [default: the host's maximum].
    #[arg(long)]
    budget: Option<u64>,
    /// Money one run may spend, such as "2.00 USD", at the config's
    /// [prices] (the tighter of this and --budget holds).
    #[arg(long, value_name = "AMOUNT")]
    max_cost_per_run: Option<cofferdam::Money>,
    /// How long one run may take, such as 30s or 5m [default: the host's].
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Slots missed while no runner was up: skip, or run the latest once.
    #[arg(long, value_parser = parse_catch_up, default_value = "skip")]
    catch_up: CatchUp,
    /// A notification sink of the config ([notify.NAME]) told when a run
    /// succeeds, fails, pauses the schedule or is escalated (repeatable).
    #[arg(long, value_name = "SINK")]
    notify: Vec<String>,
    /// Print the schedule as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_catch_up(text: &str) -> Result<CatchUp, String> {
    match text {
        "skip" => Ok(CatchUp::Skip),
        "once" => Ok(CatchUp::Once),
        _ => Err(format!("`{text}` is not one of skip, once")),
    }
}

pub(super) async fn schedules(
    command: SchedulesCommand,
    dirs: &Dirs,
    store: &StoreArgs,
) -> Result<ExitCode> {
    if let SchedulesCommand::Create(args) = command {
        let (_, host) = configured_host(&args.config, dirs).await?;
        let target = match (&args.tool, &args.task) {
            (Some(tool), _) => ScheduleTarget::Tool {
                tool: tool.clone(),
                input: serde_json::from_str(&args.input)
                    .with_context(|| format!("--input is not JSON: {}", args.input))?,
            },
            (None, Some(file)) => ScheduleTarget::Task {
                task: TaskSpec::from_file(file)?,
            },
            (None, None) => bail!("say what to run: --tool or --task"),
        };
        let spec = ScheduleSpec {
            name: args.name,
            owner: args.owner,
            tenant: args.tenant,
            cron: args.cron,
            zone: args.zone,
            target,
            budget: args.budget.map(Tokens),
            max_cost_per_run: args.max_cost_per_run,
            timeout_ms: args.timeout.map(|t| t.as_millis() as u64),
            catch_up: args.catch_up,
            notify: args.notify,
        };
        let schedule = host.schedules().create(spec).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&schedule)?);
        } else {
            println!(
                "schedule {} created: {}",
                schedule.spec.name,
                next_run(&schedule)
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let host = dirs.store(store)?.host()?;
    let schedules = host.schedules();
    match command {
        SchedulesCommand::Create(_) => unreachable!("handled above"),
        SchedulesCommand::List { owner, json } => {
            let list = schedules.list(owner.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no schedules");
            }
            for s in list.iter().filter(|_| !json) {
                let status = match &s.status {
                    ScheduleStatus::Active => "active".to_owned(),
                    ScheduleStatus::Paused { reason, .. } => format!("paused ({reason})"),
                };
                println!(
                    "{:<20} {:<12} {:<16} {:<18} {:<20} {:>4} runs {:>8} tokens  {}",
                    s.spec.name,
                    s.spec.owner,
                    s.spec.cron,
                    s.spec.zone,
                    status,
                    s.runs,
                    s.total_tokens.0,
                    next_run(s)
                );
            }
        }
        SchedulesCommand::Show { name } => {
            println!("{}", serde_json::to_string_pretty(&schedules.get(&name)?)?);
        }
        SchedulesCommand::Pause { name, reason } => {
            let s = schedules.pause(&name, &reason).await?;
            if let ScheduleStatus::Paused { reason, since, .. } = &s.status {
                println!("schedule {name} paused since {since}: {reason}");
            }
        }
        SchedulesCommand::Resume { name } => {
            let s = schedules.resume(&name).await?;
            println!("schedule {name} active: {}", next_run(&s));
        }
        SchedulesCommand::Delete { name } => {
            if schedules.delete(&name).await? {
                println!("schedule {name} deleted");
            } else {
                println!("no schedule {name} (nothing to delete)");
            }
        }
        SchedulesCommand::Notifications { schedule, json } => {
            let mut list = schedules.notifications()?;
            list.retain(|n| schedule.as_ref().is_none_or(|s| *s == n.event.schedule));
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                println!("no notifications");
            }
            for n in &list {
                let when = match n.delivered {
                    Some(at) => format!("delivered {at}"),
                    None if n.state == cofferdam::Delivery::Pending => format!("next {}", n.next),
                    None => String::new(),
                };
                println!(
                    "{:<9} {:<14} {:<16} {} attempts {} {when}{}",
                    n.state.as_str(),
                    n.sink,
                    n.event.kind.as_str(),
                    n.event.id,
                    n.attempts,
                    n.last_error
                        .as_deref()
                        .map_or_else(String::new, |e| format!("  last error: {}", preview(e))),
                );
            }
        }
        SchedulesCommand::History { name, json } => {
            let runs = schedules.history(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
                return Ok(ExitCode::SUCCESS);
            }
            if runs.is_empty() {
                println!("no runs yet");
            }
            let s = schedules.get(&name)?;
            let mut costs = Vec::new();
            for r in &runs {
                let cost = schedules.run_cost(&s, r);
                let shown = cost
                    .as_ref()
                    .map_or_else(String::new, |c| format!(" {c:>12}"));
                costs.extend(cost);
                let ended = r.ended.map_or_else(|| "-".to_owned(), |t| t.to_string());
                let detail = match (r.status, &r.error) {
                    (RunStatus::Skipped, Some(e)) => format!("{} slot(s) {e}", r.missed),
                    (_, Some(e)) => preview(e),
                    (_, None) => String::new(),
                };
                println!(
                    "{} {:<11} started {} ended {} {:>8} tokens{shown} {:>12} fuel  {detail}",
                    r.slot,
                    r.status.as_str(),
                    r.started,
                    ended,
                    r.tokens.0,
                    r.fuel
                );
            }
            let total_cost = host
                .prices()
                .sum(costs)
                .map_or_else(String::new, |c| format!(" ({c})"));
            println!(
                "total: {} runs ({} failed), {} tokens{total_cost}, {} fuel",
                s.runs, s.failures, s.total_tokens.0, s.total_fuel
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn next_run(schedule: &Schedule) -> String {
    match &schedule.next_run {
        Some(next) => format!("next run {} ({})", next.utc, next.local),
        None if !schedule.is_active() => "paused, no next run".into(),
        None => "never runs again".into(),
    }
}
