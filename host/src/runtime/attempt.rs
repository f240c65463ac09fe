//! One attempt: a fresh store from the pool, the guest instantiated under its
//! limits, one export called, the result classified.
//!
//! This is the innermost layer of the call pipeline. It never retries. It
//! reuses a store only from a tool's warm pool (`[warm]`), and gives one back
//! only after a call that ended normally: a trapped, timed-out or cancelled
//! store is dropped, and a fresh one costs microseconds with the pooling
//! allocator.

use crate::model::state::StateChanges;
use crate::runtime::state::StateView;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use tokio_util::sync::CancellationToken;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::runtime::bindings::ToolPre;
use crate::runtime::bindings::cofferdam::tool::types as wit;
use crate::runtime::host_api::{GuestServices, LogRecord, ProgressSink};
use crate::runtime::lanes::{LaneUsage, Lanes};
use crate::runtime::net::HttpStats;
use crate::runtime::sandbox::{self, CallState, Grants, MemoryLimitHit};
use crate::runtime::warm::{WarmInstance, WarmPool};
use crate::runtime::yielded::Yielded;
use crate::{CallError, Fuel, Limits, TokenPrice, ToolError, ToolName};

/// Which export to call.
pub(crate) enum Export<'a> {
    Describe,
    Invoke {
        ctx: wit::CallContext,
        input: &'a str,
    },
}

/// What the guest returned, before host-side checks.
pub(crate) enum Returned {
    Info(wit::ToolInfo),
    Output(Result<String, wit::ToolError>),
}

/// Everything one attempt produced, success or not.
pub(crate) struct Execution {
    pub result: Result<Returned, CallError>,
    pub fuel_used: Fuel,
    pub duration: Duration,
    pub stdout: Vec<u8>,
    pub stdout_dropped: u64,
    pub stderr: Vec<u8>,
    pub stderr_dropped: u64,
    pub logs: Vec<LogRecord>,
    pub logs_dropped: u64,
    pub http: HttpStats,
    /// Where its time went, by CPU lane.
    pub lane: LaneUsage,
    /// The state writes of a successful attempt, to commit.
    pub state: Option<StateChanges>,
}

/// Fuel a guest burns between two writes of its fuel counter to the store,
/// at most (about a millisecond of computing; 10 tokens at the default
/// price).
///
/// Compiled wasm keeps the counter in a register and writes it back only at
/// calls, returns and fuel checks, not at the epoch check that stops a guest
/// at its deadline: a loop without calls stopped there would look as if it
/// had burned only what it used before the loop (a second of spinning showed
/// ~1,200 fuel). An async yield every slice writes the counter back, so what
/// a stopped guest is charged lags what it burned by less than one slice.
const FUEL_SLICE: u64 = 1_000_000;

/// How the guest's future ended.
enum Stopped<T> {
    Finished(T),
    Deadline,
    Cancelled,
}

/// The trap raised by the epoch callback once the deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("wall-clock deadline reached")]
struct DeadlineHit;

pub(crate) struct Attempt<'a> {
    pub engine: &'a Engine,
    pub pre: &'a ToolPre<CallState>,
    pub tool: &'a ToolName,
    pub grants: &'a Grants,
    pub limits: Limits,
    pub price: TokenPrice,
    pub scratch_root: &'a Path,
    pub progress: Option<ProgressSink>,
    /// Stops the attempt like a deadline does, but as `Cancelled`.
    pub cancel: Option<&'a CancellationToken>,
    /// The tool's warm instances, when it reuses them.
    pub warm: Option<&'a WarmPool>,
    /// The CPU lanes: a long computation moves to the batch lane.
    pub lanes: &'a Arc<Lanes>,
    /// The tool's limit on its demoted calls (`[cpu] max_threads`).
    pub cpu: Option<&'a Arc<Semaphore>>,
    /// The tool's state bucket for this call, when its policy grants one.
    pub state: Option<StateView>,
}

impl Attempt<'_> {
    pub(crate) async fn execute(self, export: Export<'_>) -> Execution {
        let start = Instant::now();
        let limits = self.limits;
        let services = GuestServices {
            tool: self.tool.clone(),
            price: self.price,
            logs: Vec::new(),
            max_logs: limits.max_log_records,
            logs_dropped: 0,
            progress: self.progress,
            state: self.state,
        };
        let deadline = start + limits.timeout;
        let reused = match (&export, self.warm) {
            (Export::Invoke { .. }, Some(pool)) => pool.take(),
            _ => None,
        };
        let (mut store, mut sandbox, mut instance, served) = match reused {
            Some(warm) => {
                let WarmInstance {
                    mut store,
                    instance,
                    mut sandbox,
                    invocations,
                    ..
                } = warm;
                sandbox.http = store.data_mut().renew(services, deadline);
                (store, sandbox, Some(instance), invocations)
            }
            None => {
                let prepared = sandbox::prepare(
                    self.grants,
                    self.scratch_root,
                    limits.max_stdout_bytes,
                    limits.max_stderr_bytes,
                    limits.memory_bytes,
                    services,
                    deadline,
                );
                let (state, sandbox) = match prepared {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        let error = CallError::Host {
                            tool: self.tool.clone(),
                            reason: format!("cannot set up the sandbox: {e}"),
                        };
                        return Execution::failed_early(error, start);
                    }
                };
                let mut store = Store::new(self.engine, state);
                store.limiter(|state| &mut state.memory);
                (store, sandbox, None, 0)
            }
        };
        let fuel = store
            .fuel_async_yield_interval(Some(FUEL_SLICE))
            .and_then(|()| store.set_fuel(limits.fuel.0));
        if let Err(e) = fuel {
            let error = CallError::Host {
                tool: self.tool.clone(),
                reason: e.to_string(),
            };
            return Execution::failed_early(error, start);
        }
        let hostcall_fuel = transfer_limit(&limits);
        store.set_hostcall_fuel(hostcall_fuel);
        store.set_epoch_deadline(1);
        // Set while the guest is parked at an epoch yield: it was running its
        // own code, not waiting in a host call.
        let computing = Arc::new(AtomicBool::new(false));
        let parked = Arc::clone(&computing);
        let lanes = Arc::clone(self.lanes);
        let cpu = self.cpu.cloned();
        store.epoch_deadline_callback(move |mut store| {
            if Instant::now() >= deadline {
                Err(DeadlineHit.into())
            } else {
                // Yield at every tick so a busy guest never starves the
                // executor; once demoted, wait for a batch-lane permit.
                parked.store(true, Ordering::Relaxed);
                let parked = Arc::clone(&parked);
                let park = lanes.tick(&mut store.data_mut().lane, cpu.as_ref());
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(async move {
                        park.await;
                        parked.store(false, Ordering::Relaxed);
                    }),
                ))
            }
        });

        let mut instantiated = false;
        let run = async {
            let instance = match instance.take() {
                Some(instance) => instance,
                None => self.pre.instantiate_async(&mut store).await?,
            };
            instantiated = true;
            let returned = match export {
                Export::Describe => instance.call_describe(&mut store).await.map(Returned::Info),
                Export::Invoke { ctx, input } => instance
                    .call_invoke(&mut store, &ctx, input)
                    .await
                    .map(Returned::Output),
            }?;
            Ok::<_, wasmtime::Error>((returned, instance))
        };
        // The epoch callback stops a guest that computes; this timeout stops
        // one blocked in a host call, which epochs and fuel cannot interrupt.
        // Cancellation drops the guest's future at its next yield (every
        // epoch tick, or any host call), exactly as the deadline does.
        let cancel = self.cancel;
        let cancelled = async {
            match cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let (outcome, yielded) = {
            // A deadline that passes while the guest is suspended at a yield
            // (a fuel slice) found it computing, as one at an epoch yield.
            let run = std::pin::pin!(run);
            let mut guest = Yielded::new(run);
            let outcome = tokio::select! {
                biased;
                () = cancelled => Stopped::Cancelled,
                outcome = tokio::time::timeout_at(deadline.into(), &mut guest) => match outcome {
                    Ok(result) => Stopped::Finished(result),
                    Err(_elapsed) => Stopped::Deadline,
                },
            };
            (outcome, guest.last_was_yield())
        };

        // Every ending (return, trap, deadline, cancel) gives the permit back.
        let lane = store.data_mut().lane.leave(start);
        let fuel_used = Fuel(limits.fuel.0.saturating_sub(store.get_fuel().unwrap_or(0)));
        let http = sandbox.http.snapshot();
        let (stdout, stdout_dropped) = sandbox.stdout.take();
        let (stderr, stderr_dropped) = sandbox.stderr.take();
        let (result, keep) = match outcome {
            Stopped::Deadline => (
                Err(CallError::DeadlineExceeded {
                    tool: self.tool.clone(),
                    timeout: limits.timeout,
                    in_guest_code: yielded || computing.load(Ordering::Relaxed),
                }),
                None,
            ),
            Stopped::Cancelled => (
                Err(CallError::Cancelled {
                    tool: self.tool.clone(),
                }),
                None,
            ),
            Stopped::Finished(Err(error)) => (
                Err(classify(error, self.tool, &limits, &stderr, instantiated)),
                None,
            ),
            Stopped::Finished(Ok((returned, instance))) => (Ok(returned), Some(instance)),
        };
        let logs = std::mem::take(&mut store.data_mut().services.logs);
        let logs_dropped = store.data().services.logs_dropped;
        // Kept only when the attempt succeeded; committed by the caller.
        let state = store
            .data_mut()
            .services
            .state
            .take()
            .filter(|_| matches!(result, Ok(Returned::Output(Ok(_)))))
            .and_then(StateView::into_changes);
        match (self.warm, keep) {
            // Only an instance whose call ended normally goes back.
            (Some(pool), Some(instance)) if matches!(result, Ok(Returned::Output(_))) => {
                store.data_mut().services.progress = None;
                pool.put(WarmInstance::new(store, instance, sandbox, served + 1));
            }
            (warm, _) => {
                if let Some(pool) = warm {
                    pool.retire();
                }
                drop(store);
                drop(sandbox.scratch.take());
            }
        }
        Execution {
            result,
            fuel_used,
            duration: start.elapsed(),
            stdout,
            stdout_dropped,
            stderr,
            stderr_dropped,
            logs,
            logs_dropped,
            http,
            lane,
            state,
        }
    }
}

impl Execution {
    fn failed_early(error: CallError, start: Instant) -> Self {
        Self {
            result: Err(error),
            fuel_used: Fuel(0),
            duration: start.elapsed(),
            stdout: Vec::new(),
            stdout_dropped: 0,
            stderr: Vec::new(),
            stderr_dropped: 0,
            logs: Vec::new(),
            logs_dropped: 0,
            http: HttpStats::default(),
            lane: LaneUsage::default(),
            state: None,
        }
    }
}

/// Turns a wasmtime error into the matching [`CallError`].
fn classify(
    error: wasmtime::Error,
    tool: &ToolName,
    limits: &Limits,
    stderr: &[u8],
    instantiated: bool,
) -> CallError {
    let tool = tool.clone();
    if error.downcast_ref::<DeadlineHit>().is_some() {
        return CallError::DeadlineExceeded {
            tool,
            timeout: limits.timeout,
            in_guest_code: true,
        };
    }
    if error.downcast_ref::<MemoryLimitHit>().is_some() {
        return CallError::MemoryLimit {
            tool,
            limit_bytes: limits.memory_bytes,
        };
    }
    // wasmtime's error for this is private; its message is pinned by the
    // `output_far_beyond_the_transfer_limit_is_a_data_limit` test.
    if error
        .chain()
        .any(|e| e.to_string().contains("fuel allocated for hostcalls"))
    {
        return CallError::DataLimit {
            tool,
            limit: transfer_limit(limits),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::OutOfFuel {
            tool,
            fuel: limits.fuel,
        },
        Some(Trap::StackOverflow) => CallError::StackOverflow { tool },
        Some(Trap::Interrupt) => CallError::DeadlineExceeded {
            tool,
            timeout: limits.timeout,
            in_guest_code: true,
        },
        Some(trap) => match panic_message(stderr) {
            Some(message) => CallError::Panic { tool, message },
            None => CallError::Trap {
                tool,
                reason: trap.to_string(),
            },
        },
        // An error before the guest ran that is not a trap is the host's
        // (for example, every pool slot is taken).
        None if !instantiated => CallError::Host {
            tool,
            reason: format!("{error:#}"),
        },
        None => match panic_message(stderr) {
            Some(message) => CallError::Panic { tool, message },
            None => CallError::Trap {
                tool,
                reason: format!("{error:#}"),
            },
        },
    }
}

/// Bytes the guest may hand the host in one transfer. The call's output is
/// such a transfer, so the limit is never below the output limit (plus room
/// for the rest of the result), which keeps `OutputTooLarge` the error for
/// outputs just past their limit.
fn transfer_limit(limits: &Limits) -> usize {
    limits
        .hostcall_bytes
        .max(limits.max_output_bytes.saturating_add(4096))
}

/// Extracts the message of a Rust panic from a guest's stderr:
/// `thread '…' panicked at src/lib.rs:1:2:\nMESSAGE\nnote: …`.
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let at = text.rfind("panicked at ")?;
    let after = &text[at..];
    let body = after.split_once('\n').map_or("", |(_, rest)| rest);
    let message: Vec<&str> = body
        .lines()
        .take_while(|l| !l.starts_with("note: "))
        .collect();
    let message = message.join("\n").trim().to_owned();
    Some(if message.is_empty() {
        after.lines().next().unwrap_or("").to_owned()
    } else {
        message
    })
}

impl From<wit::ToolError> for ToolError {
    fn from(error: wit::ToolError) -> Self {
        match error {
            wit::ToolError::InvalidInput(m) => ToolError::InvalidInput(m),
            wit::ToolError::Transient(m) => ToolError::Transient(m),
            wit::ToolError::RateLimited(ms) => ToolError::RateLimited {
                retry_after: Duration::from_millis(u64::from(ms)),
            },
            wit::ToolError::Permanent(m) => ToolError::Permanent(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_message_is_read_from_rust_panic_output() {
        let stderr = b"\nthread '<unnamed>' panicked at src/lib.rs:13:5:\nthe tool broke\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("the tool broke"));
        assert_eq!(panic_message(b"just noise"), None);
    }
}
