//! `flights`: searches flights from an HTTP API (see `weather` for how to
//! grant the base URL and the origin). The API answers
//! `GET /flights?from=LIS&to=OPO` with a JSON list of flights.

use cofferdam_guest::ToolError;
use cofferdam_guest::http::Request;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The route to search.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// IATA code of the departure airport, such as "LIS".
    from: String,
    /// IATA code of the arrival airport, such as "OPO".
    to: String,
}

#[derive(Deserialize, Serialize)]
struct Flight {
    number: String,
    departs: String,
    price_eur: f64,
}

#[derive(Serialize)]
struct Output {
    flights: Vec<Flight>,
}

fn search(input: Input) -> Result<Output, ToolError> {
    let valid = |code: &str| code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
    if !valid(&input.from) || !valid(&input.to) {
        return Err(ToolError::invalid_input(
            "airports are three capital letters, such as LIS",
        ));
    }
    let base = std::env::var("FLIGHTS_BASE_URL").map_err(|_| {
        ToolError::permanent("FLIGHTS_BASE_URL is not set: grant it in the tool's policy [env]")
    })?;
    let flights = Request::get(&format!("{}/flights", base.trim_end_matches('/')))
        .query("from", &input.from)
        .query("to", &input.to)
        .send()?
        .error_for_status()?
        .json()?;
    Ok(Output { flights })
}

cofferdam_guest::export_tool!(search);
