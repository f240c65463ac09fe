//! `cofferdam tasks` and `cofferdam escalations`: run, resume, cancel and
//! show durable multi-step tasks, and settle by hand what the host could not.
//!
//! Running or resuming a task loads the tools of its config; the other
//! commands only read or change the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use cofferdam::{Resolution, StepStatus, TaskSpec, TaskState};

use super::{Dirs, EXIT_STOPPED, EXIT_TOOL_ERROR, Store, StoreArgs, configured_host, preview};

#[derive(Subcommand)]
pub(super) enum TasksCommand {
    /// Run a task file (TOML or JSON) with the tools of a config; a known id resumes.
    Run {
        /// The task file.
        file: PathBuf,
        /// The host config whose tools the steps call.
        #[arg(long)]
        config: PathBuf,
        /// Print the task record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resume a stored task where it stopped.
    Resume {
        /// The task id.
        id: String,
        /// The host config whose tools the steps call.
        #[arg(long)]
        config: PathBuf,
        /// Print the task record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a task's state and each step's progress.
    Status {
        /// The task id.
        id: String,
        /// Print the task record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Mark a task cancelled; resume goes on from where it stopped.
    Cancel {
        /// The task id.
        id: String,
    },
    /// List stored tasks.
    List,
}

pub(super) async fn tasks(
    command: TasksCommand,
    dirs: &Dirs,
    store: &StoreArgs,
) -> Result<ExitCode> {
    let configured = |config: PathBuf| async move { configured_host(&config, dirs).await };
    let (record, json) = match command {
        TasksCommand::Run { file, config, json } => {
            let spec = TaskSpec::from_file(&file)?;
            let (_, host) = configured(config).await?;
            (host.tasks().run(spec).await?, json)
        }
        TasksCommand::Resume { id, config, json } => {
            let (_, host) = configured(config).await?;
            (host.tasks().resume(&id).await?, json)
        }
        TasksCommand::Status { id, json } => {
            let host = dirs.store(store)?.host()?;
            (host.tasks().status(&id)?, json)
        }
        TasksCommand::Cancel { id } => {
            let host = dirs.store(store)?.host()?;
            (host.tasks().cancel(&id).await?, false)
        }
        TasksCommand::List => {
            let host = dirs.store(store)?.host()?;
            let list = host.tasks().list()?;
            if list.is_empty() {
                println!("no tasks");
            }
            for task in list {
                let done = task
                    .steps
                    .iter()
                    .filter(|s| s.status == StepStatus::Done)
                    .count();
                println!(
                    "{:<24} {:<13} {done}/{} steps done",
                    task.id,
                    task.state.as_str(),
                    task.steps.len()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        println!("task {}: {}", record.id, record.state.as_str());
        for (n, step) in record.steps.iter().enumerate() {
            let status = serde_json::to_value(step.status)?;
            let detail = match (&step.output, &step.error) {
                (_, Some(error)) => preview(error),
                (Some(output), None) => preview(&output.to_string()),
                (None, None) => String::new(),
            };
            let tool = step.tool.as_deref().unwrap_or("-");
            let fallback = if step.fallback { " (fallback)" } else { "" };
            println!(
                "  {n} {:<12} {:<20} {:<24} {detail}",
                step.name,
                status.as_str().unwrap_or("?"),
                format!("{tool}{fallback}")
            );
        }
        for id in &record.escalations {
            println!("  escalation #{id}: see `cofferdam escalations show {id}`");
        }
    }
    Ok(ExitCode::from(match record.state {
        TaskState::Completed | TaskState::Running | TaskState::Compensating => 0,
        TaskState::Compensated | TaskState::Failed => EXIT_TOOL_ERROR,
        _ => EXIT_STOPPED,
    }))
}

#[derive(Subcommand)]
pub(super) enum EscalationsCommand {
    /// List open escalations (oldest first).
    List {
        /// Include resolved ones.
        #[arg(long)]
        all: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one escalation with its whole context, as JSON.
    Show {
        /// Its number.
        id: u64,
    },
    /// Resolve an escalation; an unknown-outcome key is settled with it.
    Resolve {
        /// Its number.
        id: u64,
        /// The work did not happen: free the key so the next call runs.
        #[arg(long, group = "how")]
        resume: bool,
        /// The work happened: later calls with the key replay --output.
        #[arg(long, group = "how")]
        mark_done: bool,
        /// The work was undone by hand: the key ends in a final error.
        #[arg(long, group = "how")]
        compensate: bool,
        /// Give up: the key ends in a final error.
        #[arg(long, group = "how")]
        abort: bool,
        /// With --mark-done: the output to record (JSON) [default: null].
        #[arg(long, requires = "mark_done")]
        output: Option<String>,
        /// Who decided and why.
        #[arg(long)]
        note: String,
    },
}

pub(super) async fn escalations(command: EscalationsCommand, store: Store) -> Result<ExitCode> {
    let host = store.host()?;
    let queue = host.escalations();
    match command {
        EscalationsCommand::List { all, json } => {
            let list = queue.list(all)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no {}escalations", if all { "" } else { "open " });
            } else {
                for e in list {
                    let state = e
                        .resolved
                        .as_ref()
                        .map_or("OPEN", |r| r.resolution.as_str());
                    let subject = match (&e.task, &e.key) {
                        (Some(task), _) => format!("task {task}"),
                        (None, Some(key)) => format!("{} key {}", key.tool, key.key),
                        (None, None) => e.tool.clone().unwrap_or_default(),
                    };
                    println!(
                        "#{:<5} {:<10} {:<22} {subject:<32} {}",
                        e.id,
                        state,
                        e.reason.as_str(),
                        preview(&e.error)
                    );
                }
            }
        }
        EscalationsCommand::Show { id } => {
            println!("{}", serde_json::to_string_pretty(&queue.get(id)?)?);
        }
        EscalationsCommand::Resolve {
            id,
            resume,
            mark_done,
            compensate,
            abort,
            output,
            note,
        } => {
            let resolution = match (resume, mark_done, compensate, abort) {
                (true, ..) => Resolution::Resume,
                (_, true, ..) => Resolution::MarkDone { output },
                (_, _, true, _) => Resolution::Compensate,
                (.., true) => Resolution::Abort,
                _ => bail!("say how: --resume, --mark-done, --compensate or --abort"),
            };
            let resolved = queue.resolve(id, resolution, &note).await?;
            let how = resolved
                .resolved
                .as_ref()
                .map_or("", |r| r.resolution.as_str());
            println!("escalation #{id} resolved: {how}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
