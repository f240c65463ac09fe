//! Fetches a URL (optionally several times, optionally following one
//! redirect itself) and reports the status; transport errors and refusals
//! come back as tool errors through the SDK's mapping.

use cofferdam_guest::ToolError;
use cofferdam_guest::http::Request;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
struct Input {
    url: String,
    /// Requests to make, one after another.
    #[serde(default = "one")]
    times: u32,
    /// Follow a redirect by requesting its Location (the host never does).
    #[serde(default)]
    follow_redirect: bool,
    /// Map the status with `error_for_status`.
    #[serde(default)]
    check_status: bool,
}

fn one() -> u32 {
    1
}

#[derive(Serialize)]
struct Output {
    status: u16,
    location: Option<String>,
    body_bytes: usize,
}

fn fetch(input: Input) -> Result<Output, ToolError> {
    let mut response = Request::get(&input.url).send()?;
    for _ in 1..input.times {
        response = Request::get(&input.url).send()?;
    }
    let location = response.header("location").map(str::to_owned);
    if input.follow_redirect
        && let Some(next) = &location
    {
        response = Request::get(next).send()?;
    }
    if input.check_status {
        response = response.error_for_status()?;
    }
    Ok(Output {
        status: response.status,
        location,
        body_bytes: response.body.len(),
    })
}

cofferdam_guest::export_tool!(fetch);
