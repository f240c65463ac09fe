//! Group commit of the keyed-call writes on PostgreSQL: idempotency claims,
//! outcomes (complete, mark unknown) and releases of concurrent calls share
//! one transaction and one commit, as the redb writer's group commit does.
//! Every caller is answered only after that commit.
//!
//! A batching task takes the first queued write and whatever else is queued
//! (at most [`MAX_BATCH`]), runs them in one transaction with one
//! `db_now`, and commits. A few batches run at once ([`IN_FLIGHT`]): the
//! server flushes its WAL for several connections together, and a batch
//! building while another commits keeps the pipeline full.
//!
//! Deadlocks: every write here locks one idempotency row. A batch holds its
//! rows until its commit, so two batches (of one replica or of two) that
//! took rows in different orders could wait on each other. A batch runs its
//! writes sorted by their row's key, so every batch everywhere locks in one
//! global order and none waits in a cycle. Writes of one key keep their
//! queue order. Budget reservations and settlements lock several budget rows
//! each and stay a transaction per operation ([`super::ops`]): in a batch
//! their rows would be taken in the order of the writes, not one global
//! order, and two replicas' batches could deadlock on a shared cap.
//! Resolving an escalation locks the escalation and then its key, the
//! other way round from a claim that escalates a key: should the two meet,
//! the server breaks the cycle by aborting one, and a batch it aborts runs
//! its writes alone (below).
//!
//! Failure isolation: a write that fails aborts the whole PostgreSQL
//! transaction (or, as a logical error, may have written half), so the batch
//! rolls back and each of its writes runs again alone, in a transaction of
//! its own, and is answered with its own result. Writes keep their inputs
//! so they can run twice. Alone, a write the server aborted as a deadlock
//! or a serialization failure is tried again a few times.
//!
//! It does not batch reads, budget operations, escalations, tasks or
//! schedules (each one transaction), nor audit records (buffered and
//! inserted in batches of their own by [`super::audit_loop`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::Transaction;

use super::ops::{claim_in, db_now, release_in, update_in};
use super::{Failure, Outcome, Shared};
use crate::model::error::{JournalError, StorageCause};
use crate::model::escalation::NewEscalation;
use crate::model::journal::{Claim, Fingerprint, JournalKey, KeyState};
use crate::model::units::Effect;

/// Writes in one batch at most.
const MAX_BATCH: usize = 64;

/// Batches committing at once. Measured with the durable bench (64 calls
/// in flight, loopback server, 2 cores): 2, 4 and 8 were alike within the
/// noise, so the fewest connections.
const IN_FLIGHT: usize = 2;

/// Runs of a write alone that the server aborts as a deadlock or a
/// serialization failure, at most.
const ALONE_TRIES: usize = 4;

/// A keyed-call write, with what it needs to run again.
#[derive(Debug)]
pub(super) enum KeyWrite {
    Claim {
        key: JournalKey,
        fingerprint: Fingerprint,
        effect: Effect,
        lease: Duration,
        context: Option<NewEscalation>,
    },
    /// A claimed key's new state (completed, unknown), with the escalation
    /// to raise beside it.
    Update {
        key: JournalKey,
        state: KeyState,
        escalation: Option<NewEscalation>,
    },
    Release {
        key: JournalKey,
    },
}

/// What a write answers: a claim its [`Claim`], the others nothing.
pub(super) type Done = Option<Claim>;

impl KeyWrite {
    fn key(&self) -> &JournalKey {
        match self {
            Self::Claim { key, .. } | Self::Update { key, .. } | Self::Release { key } => key,
        }
    }

    /// Runs in `txn` (which the caller commits or rolls back).
    async fn run_in(&self, txn: &Transaction<'_>, shared: &Shared, now: u64) -> Outcome<Done> {
        match self {
            Self::Claim {
                key,
                fingerprint,
                effect,
                lease,
                context,
            } => claim_in(
                txn,
                shared,
                now,
                key,
                fingerprint,
                *effect,
                *lease,
                context.as_ref(),
            )
            .await
            .map(Some),
            Self::Update {
                key,
                state,
                escalation,
            } => update_in(txn, now, key, state, escalation.as_ref())
                .await
                .map(|()| None),
            Self::Release { key } => release_in(txn, key).await.map(|()| None),
        }
    }

    /// Runs in a transaction of its own, again when the server aborts it as
    /// a deadlock or serialization failure.
    pub(super) async fn run_alone(&self, shared: &Shared) -> Outcome<Done> {
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = async {
                let mut client = shared.pool.get().await?;
                let txn = client.transaction().await?;
                let now = db_now(&txn).await?;
                let done = self.run_in(&txn, shared, now).await?;
                txn.commit().await?;
                Ok(done)
            };
            match attempt.await {
                Err(Failure::Db(e)) if tries < ALONE_TRIES && conflict(&e) => {
                    tracing::debug!(error = %e, "store write aborted by a conflict; trying again");
                }
                done => return done,
            }
        }
    }
}

/// Whether the server aborted a transaction to break a deadlock or for a
/// serialization failure (trying again may succeed).
fn conflict(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|code| matches!(code.code(), "40001" | "40P01"))
}

/// A write waiting for its batch.
pub(super) struct Queued {
    write: KeyWrite,
    /// The locked row's key, which orders the batch.
    row: String,
    reply: oneshot::Sender<Outcome<Done>>,
}

impl Queued {
    /// `write` queued, and where its answer comes.
    fn new(write: KeyWrite) -> (Self, oneshot::Receiver<Outcome<Done>>) {
        let (reply, answer) = oneshot::channel();
        let row = write.key().encode();
        (Self { write, row, reply }, answer)
    }
}

/// Runs `write`: queued for the next batch when the store batches, else in
/// a transaction of its own.
pub(super) async fn submit(shared: Arc<Shared>, write: KeyWrite) -> Outcome<Done> {
    let Some(queue) = &shared.batches else {
        return write.run_alone(&shared).await;
    };
    let (queued, answer) = Queued::new(write);
    queue.send(queued).map_err(|_| JournalError::Stopped)?;
    // The store's deadline (around this future) bounds the wait.
    drop(shared);
    answer.await.map_err(|_| JournalError::Stopped)?
}

/// Takes queued writes in batches, [`IN_FLIGHT`] batches at most at once,
/// until the store is gone.
pub(super) async fn batcher(shared: Weak<Shared>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Writes that come while every slot is busy pile up for the next
        // batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            commit(&shared, batch).await;
            drop(slot);
        });
    }
}

/// How a batch's transaction ended.
enum Ended {
    /// Committed: every write's answer, in batch order.
    Committed(Vec<Done>),
    /// A write failed; the transaction was rolled back.
    WriteFailed,
    /// The transaction could not begin or commit: every write fails so.
    Failed(Failure),
}

/// Runs a batch in one transaction and answers each write after the commit;
/// when one of its writes fails, runs each alone instead.
async fn commit(shared: &Shared, mut batch: Vec<Queued>) {
    in_lock_order(&mut batch);
    if let [one] = batch.as_slice() {
        let done = one.write.run_alone(shared).await;
        let _ = batch.pop().map(|one| one.reply.send(done));
        return;
    }
    tracing::trace!(
        writes = batch.len(),
        "committing a batch of keyed-call writes"
    );
    let ended = match tokio::time::timeout(shared.deadline, together(shared, &batch)).await {
        Ok(ended) => ended,
        Err(_) => Ended::Failed(Failure::TimedOut),
    };
    match ended {
        Ended::Committed(answers) => {
            for (queued, done) in batch.into_iter().zip(answers) {
                let _ = queued.reply.send(Ok(done));
            }
        }
        Ended::WriteFailed => {
            tracing::debug!(
                writes = batch.len(),
                "a write of a batch failed; running each alone"
            );
            for queued in batch {
                if queued.reply.is_closed() {
                    // Its caller gave up (deadline): nothing waits for it.
                    continue;
                }
                let done = queued.write.run_alone(shared).await;
                let _ = queued.reply.send(done);
            }
        }
        Ended::Failed(failure) => {
            let error = failure.into_journal(shared);
            let again = Again::from(error);
            for queued in batch {
                let _ = queued.reply.send(Err(Failure::Journal(again.error())));
            }
        }
    }
}

/// Sorts a batch into the one global lock order (by row key). The sort is
/// stable, so writes of one key keep their queue order.
fn in_lock_order(batch: &mut [Queued]) {
    batch.sort_by(|a, b| a.row.cmp(&b.row));
}

/// Runs every write of `batch`, in its order, in one transaction and
/// commits it.
async fn together(shared: &Shared, batch: &[Queued]) -> Ended {
    let mut client = match shared.pool.get().await {
        Ok(client) => client,
        Err(e) => return Ended::Failed(e.into()),
    };
    let txn = match client.transaction().await {
        Ok(txn) => txn,
        Err(e) => return Ended::Failed(e.into()),
    };
    let now = match db_now(&txn).await {
        Ok(now) => now,
        Err(failure) => return Ended::Failed(failure),
    };
    let mut answers = Vec::with_capacity(batch.len());
    for queued in batch {
        match queued.write.run_in(&txn, shared, now).await {
            Ok(done) => answers.push(done),
            Err(failure) => {
                tracing::debug!(?failure, key = %queued.row, "a batched write failed");
                // Dropping the transaction rolls it back.
                return Ended::WriteFailed;
            }
        }
    }
    match txn.commit().await {
        Ok(()) => Ended::Committed(answers),
        Err(e) => Ended::Failed(e.into()),
    }
}

/// One error answered to every write of a failed batch.
enum Again {
    Unavailable { store: String, source: StorageCause },
    Storage(StorageCause),
}

impl From<JournalError> for Again {
    fn from(error: JournalError) -> Self {
        match error {
            JournalError::Unavailable { store, source } => Self::Unavailable { store, source },
            JournalError::Storage(source) => Self::Storage(source),
            other => Self::Storage(Arc::new(other)),
        }
    }
}

impl Again {
    fn error(&self) -> JournalError {
        match self {
            Self::Unavailable { store, source } => JournalError::Unavailable {
                store: store.clone(),
                source: Arc::clone(source),
            },
            Self::Storage(source) => JournalError::Storage(Arc::clone(source)),
        }
    }
}

#[cfg(test)]
mod tests;
