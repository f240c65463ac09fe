//! Writes `bytes` bytes to stdout and to stderr, then returns normally.

use std::io::Write;

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// Bytes to write to each of stdout and stderr.
    bytes: usize,
}

fn flood(input: Input) -> Result<usize, ToolError> {
    let chunk = [b'x'; 4096];
    let mut left = input.bytes;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while left > 0 {
        let n = left.min(chunk.len());
        out.write_all(&chunk[..n])?;
        err.write_all(&chunk[..n])?;
        left -= n;
    }
    out.flush()?;
    Ok(input.bytes)
}

cofferdam_guest::export_tool!(flood);
