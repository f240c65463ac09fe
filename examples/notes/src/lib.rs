//! `notes`: a side-effecting tool that saves a note into a writable mount.
//!
//! It expects a read-write directory at `/notes` and declares itself
//! `side-effecting`, so the host never runs it twice for one request.
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p notes
//! mkdir -p /tmp/notes
//! cargo run -p cofferdam -- run target/wasm32-wasip2/release/notes.wasm \
//!     --mount /tmp/notes:/notes:rw --input '{"title":"groceries","body":"eggs"}'
//! ```

use std::fs;
use std::io::Write;

use cofferdam_guest::{Effect, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The note to save.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// File name without extension: letters, digits, `-` and `_` only.
    title: String,
    /// Text appended to the note.
    body: String,
}

#[derive(Serialize)]
struct Output {
    path: String,
    bytes_written: usize,
}

fn save(input: Input) -> Result<Output, ToolError> {
    let valid = !input.title.is_empty()
        && input.title.len() <= 64
        && input
            .title
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ToolError::invalid_input(
            "`title` must be 1-64 characters of letters, digits, `-` or `_`",
        ));
    }
    let path = format!("/notes/{}.md", input.title);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let line = format!("{}\n", input.body);
    file.write_all(line.as_bytes())?;
    Ok(Output {
        path,
        bytes_written: line.len(),
    })
}

cofferdam_guest::export_tool!(save, effect = Effect::SideEffecting);
