//! The writer thread: group commit of every queued request in one write
//! transaction, answered only after the commit.

use std::sync::{Arc, mpsc};
use std::time::Duration;

use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;

use crate::model::budget::{BudgetCap, BudgetStatus, ScopeId};
use crate::model::error::{JournalError, StorageCause, storage};
use crate::model::escalation::{Escalation, EscalationError, NewEscalation, Resolution};
pub use crate::model::journal::{AttemptRecord, KeyState, StoredOutcome};
pub(crate) use crate::model::journal::{Claim, Fingerprint, JournalKey, Reservation, Reserved};
use crate::model::task::TaskRecord;
use crate::model::units::Effect;
pub(crate) use crate::model::units::unix_millis;
use crate::store::owner::Liveness;

use super::ops::{
    ScheduleTxn, audit, charge, claim, escalate, reap, reserve, resolve, set_cap, settle, update,
};
use super::{
    AUDIT_BATCH, AUDIT_FLUSH, AUDIT_LINGER, AuditBuffer, IDEMPOTENCY, MAX_BATCH, TASKS, encode,
};

pub(super) type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

pub(super) enum Op {
    Claim {
        key: JournalKey,
        fingerprint: Fingerprint,
        effect: Effect,
        lease: Duration,
        context: Option<Box<NewEscalation>>,
        reply: Reply<Claim>,
    },
    Complete {
        key: JournalKey,
        outcome: StoredOutcome,
        reply: Reply<()>,
    },
    Release {
        key: JournalKey,
        reply: Reply<()>,
    },
    MarkUnknown {
        key: JournalKey,
        reason: String,
        context: Box<NewEscalation>,
        reply: Reply<()>,
    },
    Escalate {
        new: Box<NewEscalation>,
        reply: Reply<u64>,
    },
    PutTask {
        record: Box<TaskRecord>,
        reply: Reply<()>,
    },
    Resolve {
        id: u64,
        resolution: Resolution,
        note: String,
        reply: Reply<Result<Escalation, EscalationError>>,
    },
    Reserve {
        scopes: Vec<ScopeId>,
        want: u64,
        whole: bool,
        reply: Reply<Reserved>,
    },
    Settle {
        reservation: Reservation,
        actual: u64,
        reply: Reply<()>,
    },
    Charge {
        scope: ScopeId,
        tokens: u64,
        reply: Reply<Option<BudgetStatus>>,
    },
    SetCap {
        scope: ScopeId,
        cap: Option<BudgetCap>,
        reply: Reply<()>,
    },
    Reap {
        before_ms: u64,
        reply: Reply<usize>,
    },
    /// The audit buffer has records: commit them within [`AUDIT_LINGER`].
    AuditPending,
    /// The audit buffer is full: commit it now.
    AuditFull,
    /// Schedule-store work done inside the batch's transaction (`None` when
    /// the transaction could not begin: the work answers an error).
    Schedules(ScheduleWork),
}

pub(super) type ScheduleWork = Box<dyn FnOnce(Option<&ScheduleTxn<'_>>) -> Answer + Send>;

impl Op {
    /// Whether the caller waits for this op, so it must be durable first.
    fn durable(&self) -> bool {
        !matches!(self, Op::AuditPending | Op::AuditFull)
    }
}

/// A reply to send once the batch's commit is known.
pub(super) type Answer = Box<dyn FnOnce(Result<(), JournalError>) + Send>;

pub(super) fn answer<T: Send + 'static>(
    reply: Reply<T>,
    result: Result<T, JournalError>,
) -> Answer {
    Box::new(move |commit| {
        let _ = reply.send(commit.and(result));
    })
}

pub(super) fn lock_audit(buffer: &AuditBuffer) -> std::sync::MutexGuard<'_, Vec<AttemptRecord>> {
    buffer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn writer(
    db: &Database,
    rx: &mpsc::Receiver<Op>,
    buffer: &AuditBuffer,
    group_commit: bool,
    live: &Liveness,
) {
    // Audit records wait in the buffer until a durable request comes (they
    // ride along in its transaction), AUDIT_BATCH of them pile up, or
    // AUDIT_LINGER passes: a stream of calls costs one wake-up and one
    // commit per batch, not per call.
    // Two buffers take turns: the callers' is swapped for the one the last
    // batch emptied, so neither is grown from nothing (reallocating under
    // the callers' lock) every batch.
    let mut spare: Vec<AttemptRecord> = Vec::with_capacity(AUDIT_BATCH);
    let drain = |spare: &mut Vec<AttemptRecord>| {
        spare.clear();
        std::mem::swap(&mut *lock_audit(buffer), spare);
    };
    let mut audit_since: Option<std::time::Instant> = None;
    let mut dirty = false;
    loop {
        let wait = audit_since.map_or(AUDIT_FLUSH, |since| {
            AUDIT_LINGER.saturating_sub(since.elapsed())
        });
        let first = match rx.recv_timeout(wait) {
            Ok(op) => Some(op),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                drain(&mut spare);
                let _ = apply(db, &spare, Vec::new(), true, live);
                return;
            }
        };
        let idle = first.is_none() && audit_since.is_none();
        let mut batch = Vec::new();
        if let Some(op) = first {
            batch.push(op);
            if group_commit {
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
            }
        }
        let mut full = false;
        batch.retain(|op| match op {
            Op::AuditPending => {
                audit_since.get_or_insert_with(std::time::Instant::now);
                false
            }
            Op::AuditFull => {
                full = true;
                false
            }
            _ => true,
        });
        let durable = batch.iter().any(Op::durable);
        let audit_due = full || audit_since.is_some_and(|since| since.elapsed() >= AUDIT_LINGER);
        if !durable && !audit_due {
            if idle && dirty {
                // Make audit records committed without fsync durable.
                if let Ok(txn) = db.begin_write() {
                    dirty = txn.commit().is_err();
                }
            }
            continue;
        }
        drain(&mut spare);
        audit_since = None;
        let answers = match apply(db, &spare, batch, durable, live) {
            Ok(answers) => answers,
            Err((answers, error)) => {
                for answer in answers {
                    answer(Err(JournalError::Storage(Arc::clone(&error))));
                }
                continue;
            }
        };
        dirty = !durable;
        for answer in answers {
            answer(Ok(()));
        }
    }
}

/// Applies a batch and the audit records waiting in one transaction and
/// commits it.
pub(super) fn apply(
    db: &Database,
    records: &[AttemptRecord],
    batch: Vec<Op>,
    durable: bool,
    live: &Liveness,
) -> Result<Vec<Answer>, (Vec<Answer>, StorageCause)> {
    let mut txn = match db.begin_write() {
        Ok(txn) => txn,
        Err(e) => {
            return Err((
                batch.into_iter().filter_map(drop_answer).collect(),
                Arc::new(e),
            ));
        }
    };
    if !durable {
        let _ = txn.set_durability(Durability::None);
    }
    let now = unix_millis();
    let answers: Vec<Answer> = batch
        .into_iter()
        .filter_map(|op| execute(&txn, op, now, live))
        .collect();
    if let Err(e) = audit(&txn, records) {
        tracing::warn!(error = %e, "cannot record attempts in the audit history");
    }
    match txn.commit() {
        Ok(()) => Ok(answers),
        Err(e) => Err((answers, Arc::new(e))),
    }
}

pub(super) fn drop_answer(op: Op) -> Option<Answer> {
    let failed = |_: ()| -> Result<(), JournalError> { Err(JournalError::Stopped) };
    match op {
        Op::Claim { reply, .. } => Some(answer(reply, failed(()).map(|()| Claim::Claimed))),
        Op::Escalate { reply, .. } => Some(answer(reply, failed(()).map(|()| 0))),
        Op::PutTask { reply, .. } => Some(answer(reply, failed(()))),
        Op::Resolve { reply, id, .. } => Some(answer(
            reply,
            failed(()).map(|()| Err(EscalationError::NotFound { id })),
        )),
        Op::Complete { reply, .. }
        | Op::Release { reply, .. }
        | Op::MarkUnknown { reply, .. }
        | Op::Settle { reply, .. }
        | Op::SetCap { reply, .. } => Some(answer(reply, failed(()))),
        Op::Reserve { reply, .. } => Some(answer(reply, failed(()).map(|()| Reserved::Unlimited))),
        Op::Charge { reply, .. } => Some(answer(reply, failed(()).map(|()| None))),
        Op::Reap { reply, .. } => Some(answer(reply, failed(()).map(|()| 0))),
        Op::AuditPending | Op::AuditFull => None,
        Op::Schedules(work) => Some(work(None)),
    }
}

pub(super) fn execute(txn: &WriteTransaction, op: Op, now: u64, live: &Liveness) -> Option<Answer> {
    match op {
        Op::Claim {
            key,
            fingerprint,
            effect,
            lease,
            context,
            reply,
        } => Some(answer(
            reply,
            claim(txn, &key, fingerprint, effect, lease, context, now, live),
        )),
        Op::Complete {
            key,
            outcome,
            reply,
        } => {
            let result = update(txn, &key, now, |entry| {
                entry.state = KeyState::Completed { outcome }
            });
            Some(answer(reply, result))
        }
        Op::MarkUnknown {
            key,
            reason,
            context,
            reply,
        } => {
            let error = reason.clone();
            let result = update(txn, &key, now, |entry| {
                entry.state = KeyState::Unknown { reason }
            })
            .and_then(|()| escalate(txn, NewEscalation { error, ..*context }, now).map(drop));
            Some(answer(reply, result))
        }
        Op::Escalate { new, reply } => Some(answer(reply, escalate(txn, *new, now))),
        Op::Schedules(work) => Some(work(Some(&ScheduleTxn { txn, now }))),
        Op::PutTask { record, reply } => {
            let result = txn
                .open_table(TASKS)
                .and_then(|mut t| {
                    t.insert(record.id.as_str(), encode(&*record).as_slice())
                        .map(drop)
                        .map_err(Into::into)
                })
                .map_err(storage);
            Some(answer(reply, result))
        }
        Op::Resolve {
            id,
            resolution,
            note,
            reply,
        } => Some(answer(reply, resolve(txn, id, resolution, note, now))),
        Op::Release { key, reply } => {
            let result = txn
                .open_table(IDEMPOTENCY)
                .and_then(|mut t| {
                    t.remove(key.encode().as_str())
                        .map(drop)
                        .map_err(Into::into)
                })
                .map_err(storage);
            Some(answer(reply, result))
        }
        Op::Reserve {
            scopes,
            want,
            whole,
            reply,
        } => Some(answer(reply, reserve(txn, &scopes, want, whole, now))),
        Op::Settle {
            reservation,
            actual,
            reply,
        } => Some(answer(reply, settle(txn, &reservation, actual, now))),
        Op::Charge {
            scope,
            tokens,
            reply,
        } => Some(answer(reply, charge(txn, &scope, tokens, now))),
        Op::SetCap { scope, cap, reply } => Some(answer(reply, set_cap(txn, &scope, cap, now))),
        Op::Reap { before_ms, reply } => Some(answer(reply, reap(txn, before_ms))),
        Op::AuditPending | Op::AuditFull => None,
    }
}
