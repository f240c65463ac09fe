//! The error-class table (DESIGN §6): for every class, whether a retry can
//! help, what the breaker records, and whether a side-effecting tool may have
//! acted before it stopped. The host decides by this table alone, never by
//! an error's message and never by asking a model.

use crate::resilience::breaker::Verdict;
use crate::{Effect, ErrorClass};

/// What the host does with an attempt that ended in a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Disposition {
    /// Another attempt may succeed (subject to effect, budget and deadline).
    pub retryable: bool,
    /// What the breaker records.
    pub verdict: Verdict,
    /// The tool was stopped (or its result lost) after it may have acted.
    pub interrupted: bool,
    /// The same input would end the same way: a keyed call stores this error
    /// and replays it, instead of releasing the key for another try.
    pub terminal: bool,
}

const fn row(retryable: bool, verdict: Verdict, interrupted: bool, terminal: bool) -> Disposition {
    Disposition {
        retryable,
        verdict,
        interrupted,
        terminal,
    }
}

/// The table. Fail-fast classes (`CircuitOpen`, `BulkheadFull`, …) never come
/// from an attempt; they are listed so the table is total.
pub(crate) fn disposition(class: ErrorClass) -> Disposition {
    use ErrorClass::*;
    use Verdict::{Failure, Ignore};
    match class {
        // The caller's fault or the caller's budget: not the tool's health.
        UnknownTool => row(false, Ignore, false, false),
        InvalidInput => row(false, Ignore, false, true),
        // A bigger budget may let the same input finish.
        OutOfFuel => row(false, Ignore, true, false),
        // Upstream hiccups the tool reported: worth another attempt.
        Transient | RateLimited => row(true, Failure, false, false),
        // A hang may be a passing overload; the attempt may have acted.
        DeadlineExceeded => row(true, Failure, true, false),
        Permanent => row(false, Failure, false, true),
        // Deterministic for the same input: retrying repeats them.
        MemoryLimit | StackOverflow | Panic | Trap | OutputTooLarge | InvalidOutput | DataLimit => {
            row(false, Failure, true, true)
        }
        // The host failed before the guest ran.
        Host => row(false, Ignore, false, false),
        // The caller walked away: not the tool's health, and the attempt
        // may have acted before it was stopped.
        Cancelled => row(false, Ignore, true, false),
        CircuitOpen | BulkheadFull | UnknownOutcome | RetriesExhausted => {
            row(false, Ignore, false, false)
        }
        // The caller's budget, the caller's key, the host's disk.
        BudgetExhausted | IdempotencyMismatch | InProgress | Journal => {
            row(false, Ignore, false, false)
        }
        // The shared store is out of reach: the host cannot claim, reserve
        // or record anything, so it does not retry on its own; the caller
        // retries later, safely with its idempotency key. Not the tool's
        // health either.
        StoreUnavailable => row(false, Ignore, false, false),
    }
}

/// Whether a tool of this effect may be retried after a retryable class:
/// only pure and idempotent tools, or calls the journal makes safe with an
/// idempotency key.
pub(crate) fn may_retry(effect: Effect, keyed: bool) -> bool {
    keyed || effect != Effect::SideEffecting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_design() {
        let cases = [
            (ErrorClass::InvalidInput, false, Verdict::Ignore),
            (ErrorClass::Transient, true, Verdict::Failure),
            (ErrorClass::RateLimited, true, Verdict::Failure),
            (ErrorClass::DeadlineExceeded, true, Verdict::Failure),
            (ErrorClass::Permanent, false, Verdict::Failure),
            (ErrorClass::Panic, false, Verdict::Failure),
            (ErrorClass::MemoryLimit, false, Verdict::Failure),
            (ErrorClass::StackOverflow, false, Verdict::Failure),
            (ErrorClass::OutOfFuel, false, Verdict::Ignore),
            (ErrorClass::Host, false, Verdict::Ignore),
        ];
        for (class, retryable, verdict) in cases {
            let d = disposition(class);
            assert_eq!((d.retryable, d.verdict), (retryable, verdict), "{class:?}");
        }
        assert!(disposition(ErrorClass::DeadlineExceeded).interrupted);
        let terminal = [
            ErrorClass::InvalidInput,
            ErrorClass::Permanent,
            ErrorClass::Panic,
        ];
        assert!(terminal.iter().all(|c| disposition(*c).terminal));
        let passing = [
            ErrorClass::Transient,
            ErrorClass::OutOfFuel,
            ErrorClass::CircuitOpen,
        ];
        assert!(passing.iter().all(|c| !disposition(*c).terminal));
        assert!(!disposition(ErrorClass::Transient).interrupted);
        let cancelled = disposition(ErrorClass::Cancelled);
        assert!(cancelled.interrupted && !cancelled.retryable && !cancelled.terminal);
        assert!(!may_retry(Effect::SideEffecting, false));
        assert!(may_retry(Effect::SideEffecting, true));
        assert!(may_retry(Effect::Idempotent, false));
    }
}
