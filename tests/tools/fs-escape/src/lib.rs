//! Tries one way out of its sandbox and reports what happened.
//!
//! A denied attempt is reported as `{"ok":false,"error":...}` so tests can
//! assert the guest saw the denial (and not a host failure).

use std::fs;
use std::io::Write as _;

use cofferdam_guest::serde_json;

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Input {
    /// Reads a file and returns its text.
    Read { path: String },
    /// Creates or truncates a file with `contents`.
    Write { path: String, contents: String },
    /// Lists a directory.
    List { path: String },
    /// Creates a symbolic link at `link` pointing to `target`.
    Symlink { target: String, link: String },
    /// Writes `bytes` zero bytes to a new file, in 64 KiB writes; returns the
    /// bytes written.
    Fill { path: String, bytes: u64 },
    /// Creates a file (if needed) and sets its length to `size`.
    SetSize { path: String, size: u64 },
    /// Returns the environment the tool sees.
    Env,
}

#[derive(Serialize)]
struct Output {
    ok: bool,
    value: serde_json::Value,
    error: Option<String>,
}

fn attempt(input: Input) -> Result<Output, ToolError> {
    let result: std::io::Result<serde_json::Value> = match input {
        Input::Read { path } => fs::read_to_string(path).map(Into::into),
        Input::Write { path, contents } => fs::write(path, contents).map(|()| "written".into()),
        Input::List { path } => fs::read_dir(path).and_then(|dir| {
            let names: std::io::Result<Vec<String>> = dir
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            names.map(Into::into)
        }),
        Input::Symlink { target, link } => symlink(&target, &link).map(|()| "linked".into()),
        Input::Fill { path, bytes } => fill(&path, bytes).map(Into::into),
        Input::SetSize { path, size } => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .and_then(|file| file.set_len(size))
            .map(|()| "resized".into()),
        Input::Env => Ok(std::env::vars()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .into()),
    };
    Ok(match result {
        Ok(value) => Output {
            ok: true,
            value,
            error: None,
        },
        Err(e) => Output {
            ok: false,
            value: serde_json::Value::Null,
            error: Some(e.to_string()),
        },
    })
}

#[expect(
    deprecated,
    reason = "the stable spelling of symlink on wasi (std::os::wasi::fs is unstable)"
)]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    fs::soft_link(target, link)
}

fn fill(path: &str, bytes: u64) -> std::io::Result<u64> {
    let mut file = fs::File::create(path)?;
    let chunk = vec![0_u8; 64 << 10];
    let mut written = 0;
    while written < bytes {
        let n = chunk
            .len()
            .min(usize::try_from(bytes - written).unwrap_or(usize::MAX));
        file.write_all(&chunk[..n])?;
        written += n as u64;
    }
    file.flush()?;
    Ok(written)
}

cofferdam_guest::export_tool!(attempt);
