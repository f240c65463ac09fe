//! Builds every guest crate (examples and test tools) to wasm32-wasip2 and
//! writes `artifacts.rs` with one path constant per component.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Guest crates, by directory relative to the workspace root.
const GUESTS: &[&str] = &[
    "examples/hello",
    "examples/grep",
    "examples/notes",
    "examples/weather",
    "examples/flights",
    "examples/booking",
    "examples/monitor",
    "tests/tools/loop-forever",
    "tests/tools/alloc-forever",
    "tests/tools/deep-recursion",
    "tests/tools/stdout-flood",
    "tests/tools/huge-output",
    "tests/tools/fs-escape",
    "tests/tools/trap",
    "tests/tools/flaky",
    "tests/tools/sleepy",
    "tests/tools/introspect",
    "tests/tools/fetch",
    "tests/tools/counter",
    "tests/tools/state-writer",
];

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .and_then(Path::parent)
        .context("tests/artifacts lies two levels below the workspace root")?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let target_dir = out_dir.join("guest-target");

    for dir in ["wit", "guest-sdk", "examples", "tests/tools"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host build must not leak into the guests.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        // Small components compile faster; names stay for trap backtraces.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    let mut names = Vec::new();
    for guest in GUESTS {
        let name = Path::new(guest)
            .file_name()
            .and_then(|n| n.to_str())
            .context("guest directory name")?;
        cmd.args(["-p", name]);
        names.push(name);
    }
    let status = cmd.status().context("running cargo for the guest tools")?;
    if !status.success() {
        bail!(
            "building the guest tools failed ({status}); is the target installed? \
             run `rustup target add wasm32-wasip2`"
        );
    }

    let mut code = String::new();
    for name in names {
        let file = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        if !file.exists() {
            bail!("expected component {} was not built", file.display());
        }
        let konst = name.replace('-', "_").to_uppercase();
        writeln!(code, "/// Component built from the `{name}` crate.")?;
        writeln!(
            code,
            "pub const {konst}: &str = {:?};",
            file.display().to_string()
        )?;
    }
    fs::write(out_dir.join("artifacts.rs"), code)?;
    Ok(())
}
