//! Tries one way out of its sandbox and reports what happened.
//!
//! A denied attempt is reported as `{"ok":false,"error":...}` so tests can
//! assert the guest saw the denial (and not a host failure).

use std::fs;

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

cofferdam_guest::export_tool!(attempt);
