//! `grep`: searches text in the files of a read-only mounted directory.
//!
//! The tool sees only what its policy mounts; it expects a directory at
//! `/data`. Build and run it:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p grep
//! cargo run -p cofferdam -- run target/wasm32-wasip2/release/grep.wasm \
//!     --mount ./docs:/data --input '{"pattern":"cofferdam"}'
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use cofferdam_guest::{Context, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const ROOT: &str = "/data";

/// What to search for, and where.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// Text to find (case-sensitive, plain text, not a regex).
    pattern: String,
    /// Directory or file below `/data` to search; the whole mount by default.
    #[serde(default)]
    path: Option<String>,
    /// Stop after this many matching lines (default 100).
    #[serde(default)]
    max_matches: Option<usize>,
}

#[derive(Serialize)]
struct Match {
    file: String,
    line: usize,
    text: String,
}

#[derive(Serialize)]
struct Output {
    matches: Vec<Match>,
    files_searched: usize,
    truncated: bool,
}

fn grep(ctx: &Context, input: Input) -> Result<Output, ToolError> {
    if input.pattern.is_empty() {
        return Err(ToolError::invalid_input("`pattern` must not be empty"));
    }
    let start = match &input.path {
        Some(p) => Path::new(ROOT).join(p.trim_start_matches('/')),
        None => PathBuf::from(ROOT),
    };
    let limit = input.max_matches.unwrap_or(100);
    let mut out = Output {
        matches: Vec::new(),
        files_searched: 0,
        truncated: false,
    };
    let mut pending = vec![start];
    while let Some(path) = pending.pop() {
        let meta = fs::metadata(&path)?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(&path)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort_unstable_by(|a, b| b.cmp(a));
            pending.extend(entries);
            continue;
        }
        out.files_searched += 1;
        let Ok(text) = fs::read_to_string(&path) else {
            continue; // binary or unreadable as UTF-8: not text to search
        };
        for (n, line) in text.lines().enumerate() {
            if line.contains(&input.pattern) {
                if out.matches.len() == limit {
                    out.truncated = true;
                    return Ok(out);
                }
                out.matches.push(Match {
                    file: path.display().to_string(),
                    line: n + 1,
                    text: line.to_owned(),
                });
            }
        }
        ctx.progress(out.files_searched as u64, None, &path.display().to_string());
    }
    Ok(out)
}

cofferdam_guest::export_tool!(grep);
