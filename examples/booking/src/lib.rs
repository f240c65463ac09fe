//! `booking`: the example tool of the trip task (`examples/trip`). It
//! reserves a flight or a hotel, cancels a reservation, or charges a card, by
//! appending one JSON line per action to `/ledger/ledger.jsonl`, a read-write
//! mount: a side effect a test or a person can count.
//!
//! A charge to the test card `4000-0000-0000-0002` is declined (a permanent
//! error), which is how the demo shows compensation.

use std::fs;
use std::io::Write;

use cofferdam_guest::{Effect, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const LEDGER: &str = "/ledger/ledger.jsonl";
const DECLINED_CARD: &str = "4000-0000-0000-0002";

/// One booking action.
#[derive(Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
enum Input {
    /// Reserve something (a flight, a hotel room).
    Reserve {
        /// What: `flight LIS-JFK`, `hotel near JFK`.
        item: String,
    },
    /// Cancel an earlier reservation.
    Cancel {
        /// The reservation to cancel.
        reference: String,
    },
    /// Charge a card.
    Charge {
        /// Card number.
        card: String,
        /// Amount in cents.
        amount_cents: u64,
        /// What the charge is for.
        #[serde(default)]
        memo: String,
    },
}

#[derive(Serialize)]
struct Output {
    reference: String,
    action: &'static str,
}

fn book(input: Input) -> Result<Output, ToolError> {
    let (action, entry) = match &input {
        Input::Reserve { item } if item.trim().is_empty() => {
            return Err(ToolError::invalid_input("`item` must not be empty"));
        }
        Input::Reserve { item } => ("reserve", serde_json::json!({ "item": item })),
        Input::Cancel { reference } => ("cancel", serde_json::json!({ "reference": reference })),
        Input::Charge { card, .. } if card == DECLINED_CARD => {
            return Err(ToolError::permanent("card declined"));
        }
        Input::Charge {
            card,
            amount_cents,
            memo,
        } => {
            let last4 = card.chars().rev().take(4).collect::<String>();
            let last4: String = last4.chars().rev().collect();
            (
                "charge",
                serde_json::json!({ "card": format!("…{last4}"), "amount_cents": amount_cents, "memo": memo }),
            )
        }
    };
    let count = fs::read_to_string(LEDGER).map_or(0, |text| text.lines().count());
    let reference = format!("{action}-{}", count + 1);
    let mut line = serde_json::json!({ "reference": reference, "action": action });
    if let (Some(line), Some(entry)) = (line.as_object_mut(), entry.as_object()) {
        line.extend(entry.clone());
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LEDGER)?;
    file.write_all(format!("{line}\n").as_bytes())?;
    Ok(Output { reference, action })
}

cofferdam_guest::export_tool!(book, effect = Effect::SideEffecting);
