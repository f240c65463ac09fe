//! `weather`: a tool that calls an HTTP API, the safe way.
//!
//! It reads the API's base URL from `WEATHER_BASE_URL` (granted by its
//! policy's `[env]`) and may reach only the origins its policy's `[http]`
//! allows. Upstream trouble becomes the right `tool-error` case: 429 is
//! rate-limited, 503 transient, so the host retries and its breaker opens
//! when the upstream is down. Run it against a local API:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p weather
//! cat > weather.toml <<'TOML'
//! component = "target/wasm32-wasip2/release/weather.wasm"
//! [env]
//! WEATHER_BASE_URL = "http://127.0.0.1:8080"
//! [http]
//! allow = ["http://127.0.0.1:8080"]
//! allow_private = ["127.0.0.1/32"]   # a local test API; omit for public APIs
//! TOML
//! cofferdam run --manifest weather.toml --input '{"city":"Lisbon"}'
//! ```
//!
//! The API answers `GET /forecast?city=NAME` with
//! `{"city": ..., "summary": ..., "temperature_c": ...}`.

use cofferdam_guest::http::Request;
use cofferdam_guest::{Context, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The city to look up.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// City name, such as "Lisbon".
    city: String,
}

#[derive(Deserialize, Serialize)]
struct Forecast {
    city: String,
    summary: String,
    temperature_c: f64,
}

fn forecast(ctx: &Context, input: Input) -> Result<Forecast, ToolError> {
    if input.city.trim().is_empty() {
        return Err(ToolError::invalid_input("`city` must not be empty"));
    }
    let base = std::env::var("WEATHER_BASE_URL").map_err(|_| {
        ToolError::permanent("WEATHER_BASE_URL is not set: grant it in the tool's policy [env]")
    })?;
    ctx.log_info(&format!("asking {base} about {}", input.city));
    Request::get(&format!("{}/forecast", base.trim_end_matches('/')))
        .query("city", &input.city)
        .header("accept", "application/json")
        .send()?
        .error_for_status()?
        .json()
}

cofferdam_guest::export_tool!(forecast);
