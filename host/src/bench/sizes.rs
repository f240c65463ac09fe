//! How the per-call cost grows with the input: a string field of the
//! benchmark's input (the first one found) padded to 16 B, 1 KiB, 64 KiB
//! and 1 MiB, a fresh `Host::call` against plain wasmtime's fresh instance
//! (bare, with fuel and epoch checks, and with epoch checks only) at each
//! size, interleaved.
//!
//! An input without a string field skips the scenario, unless it was asked
//! for by name (`--only sizes`), which is an error.
//!
//! The guest's own work grows with the input too (the `hello` example
//! parses the name and formats a greeting as long); the ratios say what the
//! host adds on top.

use std::hint::black_box;

use super::plain::{PlainWasmtime, Pooling};
use super::{BenchError, BenchOptions, BenchReport, Unit, batch_us, host_error, median, only_tool};
use crate::{CallRequest, LimitsSpec, ToolPolicy};

/// The input sizes measured, in bytes of the padded field.
const SIZES: [(usize, &str); 4] = [
    (16, "16 B"),
    (1 << 10, "1 KiB"),
    (64 << 10, "64 KiB"),
    (1 << 20, "1 MiB"),
];

/// `input` with a string field (the first one found) padded to `bytes`
/// characters, or `None` when it has no string field.
fn padded(input: &str, bytes: usize) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(input).ok()?;
    let field = value
        .as_object_mut()?
        .values_mut()
        .find(|v| v.is_string())?;
    *field = serde_json::Value::String("x".repeat(bytes));
    Some(value.to_string())
}

pub(super) async fn sizes(
    options: &BenchOptions,
    bytes: &[u8],
    report: &mut BenchReport,
) -> Result<(), BenchError> {
    let Some(inputs) = SIZES
        .into_iter()
        .map(|(size, label)| Some((size, label, padded(&options.input, size)?)))
        .collect::<Option<Vec<_>>>()
    else {
        if options.only.contains(&super::Scenario::Sizes) {
            return Err(BenchError::Options(format!(
                "the input-size scenario pads a string field of the input, and `{}` has none",
                options.input
            )));
        }
        return Ok(());
    };
    let component_error = |e: wasmtime::Error| BenchError::Component {
        path: options.component.clone(),
        message: format!("{e:#}"),
    };
    let plain = PlainWasmtime::new(bytes, Pooling::SameAsCofferdam).map_err(component_error)?;
    let metered = PlainWasmtime::metered(bytes).map_err(component_error)?;
    let epochs = PlainWasmtime::epochs_only(bytes).map_err(component_error)?;
    let host = options.builder().build().map_err(host_error)?;
    // Room for an echo of the largest input.
    let policy = ToolPolicy {
        limits: LimitsSpec {
            max_output_bytes: Some(4 << 20),
            ..LimitsSpec::default()
        },
        ..ToolPolicy::default()
    };
    host.load_file(&options.component, policy)
        .await
        .map_err(host_error)?;
    let name = only_tool(&host)?;
    let group = "fresh call by input size (interleaved medians; ratio to plain fresh)";
    for (size, label, input) in inputs {
        // About the same time per size: fewer calls as inputs grow.
        let batch = options
            .batch
            .min(u32::try_from((64 << 20) / (size * 64)).unwrap_or(u32::MAX))
            .max(3);
        let rounds = options.rounds.min(11);
        let (mut plain_us, mut metered_us, mut epochs_us, mut ours_us) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            for (samples, baseline) in [
                (&mut plain_us, &plain),
                (&mut metered_us, &metered),
                (&mut epochs_us, &epochs),
            ] {
                samples.push(
                    batch_us(batch, || async {
                        black_box(baseline.call(&input).await);
                    })
                    .await,
                );
            }
            ours_us.push(
                batch_us(batch, || async {
                    let outcome = host.call(CallRequest::new(&name, input.as_str())).await;
                    black_box(outcome.expect("benchmark call succeeds"));
                })
                .await,
            );
        }
        let (plain, metered, ours) = (median(plain_us), median(metered_us), median(ours_us));
        let epochs = median(epochs_us);
        report.push(
            group,
            &format!("{label}: plain wasmtime, fresh instance"),
            plain,
            Unit::MicrosPerCall,
            Some(1.0),
        );
        report.push(
            group,
            &format!("{label}: plain wasmtime + fuel and epoch checks"),
            metered,
            Unit::MicrosPerCall,
            Some(metered / plain),
        );
        report.push(
            group,
            &format!("{label}: plain wasmtime + epoch checks only (no fuel)"),
            epochs,
            Unit::MicrosPerCall,
            Some(epochs / plain),
        );
        report.push(
            group,
            &format!("{label}: cofferdam Host::call, fresh instance"),
            ours,
            Unit::MicrosPerCall,
            Some(ours / plain),
        );
        report.target("<= 1.1x plain fresh", ours / plain <= 1.1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::padded;

    #[test]
    fn pads_one_string_field_only() {
        let input = padded(r#"{"n":1,"name":"bench","b":["c"]}"#, 3).expect("has one");
        let value: serde_json::Value = serde_json::from_str(&input).expect("json");
        assert_eq!(value["name"], "xxx");
        assert_eq!(value["b"][0], "c");
        assert_eq!(value["n"], 1);
        assert_eq!(padded(r#"{"n":1}"#, 3), None);
        assert_eq!(padded("[]", 3), None);
    }
}
