//! `cofferdam run` and `cofferdam inspect`: load one component (or a tool
//! manifest), call it once or describe it, and turn the outcome into output
//! and an exit code.
//!
//! Mounts are checked here before the host sees them: a path through a
//! symlink is refused as its own root, and a mount of `/` or the home
//! directory is warned about. What a mount may reach is the host's to
//! enforce, not this module's.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use cofferdam::{
    CallError, CallOutcome, CallRequest, Effect, ErrorClass, LimitsSpec, LoadError,
    MAX_IDEMPOTENCY_KEY_LEN, Mount, MountMode, Tokens, ToolDescription, ToolPolicy,
};

use super::{
    Dirs, EXIT_HOST, EXIT_STOPPED, EXIT_TOOL_ERROR, EXIT_UNAVAILABLE, EXIT_USAGE, chain,
    parse_duration, preview,
};

#[derive(Args)]
pub(super) struct RunArgs {
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
pub(super) struct InspectArgs {
    /// The component (.wasm).
    component: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(args: RunArgs, dirs: &Dirs) -> Result<ExitCode> {
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
                        "message": chain(&error),
                        "retry_after_ms": retry_after,
                        "replayed": error.is_replayed(),
                    },
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                eprintln!("error [{}]: {}", class.as_str(), chain(&error));
            }
            ExitCode::from(exit_code(&error))
        }
    }
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
        ErrorClass::StoreUnavailable => EXIT_UNAVAILABLE,
        _ => EXIT_STOPPED,
    }
}

pub(super) async fn inspect(args: InspectArgs, dirs: &Dirs) -> Result<ExitCode> {
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

#[cfg(test)]
mod tests {
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
    fn idempotency_keys_are_checked_against_the_rule() {
        assert_eq!(parse_key("order-18"), Ok("order-18".to_owned()));
        assert_eq!(parse_key(&"k".repeat(255)).map(|k| k.len()), Ok(255));
        assert_eq!(
            parse_key(""),
            Err("an idempotency key must be 1 to 255 bytes, not 0".to_owned())
        );
        assert!(parse_key(&"k".repeat(256)).is_err());
    }
}
