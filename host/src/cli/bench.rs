//! `cofferdam bench`: measure this machine with the library's benchmark and
//! print its report with the CPU, cores and memory it ran on.
//!
//! The measuring is the library's (`cofferdam::bench`); this module only
//! checks the tool exists and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

#[derive(Args)]
pub(super) struct BenchArgs {
    /// A trivial tool component to measure with.
    #[arg(long, default_value = "target/wasm32-wasip2/release/hello.wasm")]
    tool: PathBuf,
    /// Its input (JSON).
    #[arg(long, default_value = r#"{"name":"bench"}"#)]
    input: String,
    /// A tool that computes forever (the `loop-forever` test tool): adds the
    /// CPU-fairness scenario, in process and through `cofferdam serve` over
    /// stdio.
    #[arg(long, value_name = "WASM")]
    spinner: Option<PathBuf>,
    /// The hosts' epoch tick in milliseconds (how often a computing guest
    /// yields and its deadline is checked) [default: the host's, 10]
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=1000))]
    epoch_tick_ms: Option<u64>,
    /// A few iterations only: checks that everything runs, measures nothing.
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Interleaved rounds per latency figure (default: 31, or 3 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// Calls per contender per round (default: 400, or 5 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// Measure only these scenarios (comma-separated; default: all).
    #[arg(long, value_delimiter = ',', value_parser = scenario())]
    only: Vec<cofferdam::bench::Scenario>,
}

/// `--only`'s values: the library's scenario names.
fn scenario() -> impl clap::builder::TypedValueParser<Value = cofferdam::bench::Scenario> {
    use clap::builder::{PossibleValuesParser, TypedValueParser as _};
    use cofferdam::bench::Scenario;
    PossibleValuesParser::new(Scenario::ALL.map(Scenario::as_str))
        .map(|name| Scenario::named(&name).expect("clap admits only scenario names"))
}

/// With `store` (the global `--store`), the durable scenario also measures
/// keyed calls on that database (use a scratch one: it leaves its keys).
pub(super) async fn bench(args: BenchArgs, store: Option<String>) -> Result<ExitCode> {
    use cofferdam::bench::{self, BenchOptions};
    if !args.tool.is_file() {
        bail!(
            "no component at {} (build one: cargo build --release --target wasm32-wasip2 -p hello, or pass --tool)",
            args.tool.display()
        );
    }
    if let Some(spinner) = args.spinner.as_ref().filter(|s| !s.is_file()) {
        bail!("no spinner component at {}", spinner.display());
    }
    let mut options = if args.quick {
        BenchOptions::quick(&args.tool, args.input)
    } else {
        BenchOptions::full(&args.tool, args.input)
    };
    options.serve_exe = args
        .spinner
        .is_some()
        .then(std::env::current_exe)
        .transpose()?;
    options.spinner = args.spinner;
    options.epoch_tick = args.epoch_tick_ms.map(std::time::Duration::from_millis);
    options.store_url = store;
    options.only = args.only;
    options.rounds = args.rounds.unwrap_or(options.rounds);
    options.batch = args.batch.unwrap_or(options.batch);
    let json = args.json;
    let report = tokio::task::spawn_blocking(move || {
        bench::run(&options, &mut |step| {
            if !json {
                eprintln!("measuring {step}…");
            }
        })
    })
    .await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", machine());
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// CPU model, cores and memory, as far as Linux tells.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("machine: {model}, {cores} cores, {mem_gib:.0} GiB")
}
