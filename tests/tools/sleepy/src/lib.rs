//! Blocks in a host call (a WASI clock wait) for `millis` milliseconds.
//!
//! Fuel and epochs do not interrupt a guest waiting in the host, so only the
//! host's wall-clock deadline around the whole call stops this one. With
//! `mark`, it first appends a line to a file: a side effect tests can count.

use cofferdam_guest::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// How long to sleep.
    millis: u64,
    /// A file to append a line to before sleeping: a visible side effect.
    #[serde(default)]
    mark: Option<String>,
}

fn sleep(input: Input) -> Result<u64, ToolError> {
    if let Some(path) = &input.mark {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        std::io::Write::write_all(&mut file, b"acted\n")?;
    }
    std::thread::sleep(std::time::Duration::from_millis(input.millis));
    Ok(input.millis)
}

cofferdam_guest::export_tool!(sleep);
