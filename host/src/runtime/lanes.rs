//! CPU lanes: long computations never hold every core.
//!
//! Every call starts in the interactive lane, which has no limit. A call
//! whose guest has computed past a quantum (counted in epoch ticks seen while
//! it runs its own code, not while it waits in a host call) is demoted to the
//! batch lane: from then on it runs only while it holds one of the batch
//! lane's permits, of which there are fewer than compute threads (default:
//! all but one). A demoted call without a permit parks at its next epoch
//! yield, off the executor, until one is free; so however many calls spin,
//! a thread stays free for short calls. Time spent parked counts against
//! the call's deadline like any other: a parked call is stopped at its
//! deadline (`deadline-exceeded`, in guest code) or on cancel, and its
//! permit, if it held one, is returned on every ending.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the batch lane is sized and when a call is demoted to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaneConfig {
    /// Batch-lane permits: how many demoted calls compute at once.
    pub batch_threads: u32,
    /// Epoch ticks a call's guest must be seen computing before it is
    /// demoted (at least 2: the first tick may come a moment after it
    /// started).
    pub quantum_ticks: u32,
}

impl LaneConfig {
    /// The batch lane for `threads` compute threads (all but one, at least
    /// one), demoting after `quantum` of guest time at `tick` granularity.
    pub(crate) fn new(
        threads: usize,
        batch_threads: Option<u32>,
        quantum: Duration,
        tick: Duration,
    ) -> Self {
        let all_but_one = u32::try_from(threads.saturating_sub(1)).unwrap_or(u32::MAX);
        let ticks = quantum.as_nanos().div_ceil(tick.as_nanos().max(1));
        Self {
            batch_threads: batch_threads.unwrap_or(all_but_one).max(1),
            quantum_ticks: u32::try_from(ticks)
                .unwrap_or(u32::MAX)
                .saturating_add(1)
                .max(2),
        }
    }
}

/// The lanes of a host.
pub(crate) struct Lanes {
    config: LaneConfig,
    batch: Arc<Semaphore>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    demotions: AtomicU64,
    permit_waits: AtomicU64,
    waiting: AtomicU64,
}

/// What the lanes are doing, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LaneStats {
    /// Batch-lane permits (demoted calls computing at once, at most).
    pub batch_threads: u32,
    /// Demoted calls computing now (holding a permit).
    pub batch_running: u32,
    /// Demoted calls parked for a permit now.
    pub batch_waiting: u64,
    /// Calls demoted since the host started.
    pub demotions: u64,
    /// Times a demoted call had to park for a permit.
    pub permit_waits: u64,
}

impl Lanes {
    pub(crate) fn new(config: LaneConfig) -> Self {
        Self {
            config,
            batch: Arc::new(Semaphore::new(config.batch_threads as usize)),
            counters: Arc::default(),
        }
    }

    pub(crate) fn stats(&self) -> LaneStats {
        let available = u32::try_from(self.batch.available_permits()).unwrap_or(u32::MAX);
        LaneStats {
            batch_threads: self.config.batch_threads,
            batch_running: self.config.batch_threads.saturating_sub(available),
            batch_waiting: self.counters.waiting.load(Ordering::Relaxed),
            demotions: self.counters.demotions.load(Ordering::Relaxed),
            permit_waits: self.counters.permit_waits.load(Ordering::Relaxed),
        }
    }

    /// Called at each epoch tick `lane`'s guest is seen computing: what to
    /// wait for before it goes on (a yield, or a batch permit once demoted).
    /// `tool` limits how many of its tool's demoted calls compute at once.
    pub(crate) fn tick(&self, lane: &mut CallLane, tool: Option<&Arc<Semaphore>>) -> Park {
        if let Some(arriving) = lane.arriving.take()
            && let Some(arrived) = lock(&arriving).take()
        {
            lane.held = Some(arrived.permits);
            let since = lane.parked_since.take().unwrap_or(arrived.at);
            lane.parked += arrived.at.saturating_duration_since(since);
        }
        lane.ticks = lane.ticks.saturating_add(1);
        if lane.ticks < self.config.quantum_ticks || lane.held.is_some() {
            return Box::pin(tokio::task::yield_now());
        }
        if lane.ticks == self.config.quantum_ticks {
            self.counters.demotions.fetch_add(1, Ordering::Relaxed);
            lane.demoted_at = Some(Instant::now());
        }
        if let Some(permits) = self.try_permits(tool) {
            lane.held = Some(permits);
            return Box::pin(tokio::task::yield_now());
        }
        self.counters.permit_waits.fetch_add(1, Ordering::Relaxed);
        lane.permit_waits = lane.permit_waits.saturating_add(1);
        lane.parked_since = Some(Instant::now());
        // Only a call that parks pays for a shared slot to be handed its
        // permits in.
        let arriving = Arc::<Mutex<Option<Arrived>>>::default();
        lane.arriving = Some(Arc::clone(&arriving));
        let (batch, tool) = (Arc::clone(&self.batch), tool.map(Arc::clone));
        let waiting = Waiting::new(&self.counters);
        Box::pin(async move {
            // The tool's permit first, then the lane's: one order, no deadlock.
            let tool = match tool {
                Some(tool) => tool.acquire_owned().await.ok(),
                None => None,
            };
            if let Ok(batch) = batch.acquire_owned().await {
                *lock(&arriving) = Some(Arrived {
                    permits: (tool, batch),
                    at: Instant::now(),
                });
            }
            drop(waiting);
        })
    }

    /// Both permits at once, or neither.
    fn try_permits(&self, tool: Option<&Arc<Semaphore>>) -> Option<Permits> {
        let tool = match tool {
            Some(tool) => Some(Arc::clone(tool).try_acquire_owned().ok()?),
            None => None,
        };
        let batch = Arc::clone(&self.batch).try_acquire_owned().ok()?;
        Some((tool, batch))
    }
}

/// The tool's permit (if it has a limit), then the batch lane's: held together.
type Permits = (Option<OwnedSemaphorePermit>, OwnedSemaphorePermit);

/// Permits handed to a parked call, and when.
struct Arrived {
    permits: Permits,
    at: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One call's place in the lanes, kept in its store data (so the epoch
/// callback reaches it without a shared allocation per call).
#[derive(Default)]
pub(crate) struct CallLane {
    /// Epoch ticks its guest was seen computing.
    ticks: u32,
    /// The permits it computes under, once demoted.
    held: Option<Permits>,
    /// Where a parked wait hands its permits in.
    arriving: Option<Arc<Mutex<Option<Arrived>>>>,
    /// When it was demoted.
    demoted_at: Option<Instant>,
    /// When it parked for permits it has not yet been handed.
    parked_since: Option<Instant>,
    /// Time spent parked for permits.
    parked: Duration,
    /// Times it parked.
    permit_waits: u32,
}

/// Where an attempt spent its time, by lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LaneUsage {
    /// From its start until its demotion (or its end).
    pub interactive: Duration,
    /// From its demotion until its end, parked time included.
    pub batch: Duration,
    /// Parked for batch permits.
    pub parked: Duration,
    /// Whether it was demoted.
    pub demoted: bool,
    /// Times it parked for permits.
    pub permit_waits: u32,
}

/// What the guest waits for at an epoch yield.
pub(crate) type Park = Pin<Box<dyn Future<Output = ()> + Send>>;

impl CallLane {
    /// The call's attempt, started at `started`, ended (or a warm instance
    /// starts a new one): its permits go back, its quantum starts again, and
    /// where its time went is returned.
    pub(crate) fn leave(&mut self, started: Instant) -> LaneUsage {
        let now = Instant::now();
        let end_of_interactive = self.demoted_at.unwrap_or(now);
        let still_parked = self
            .parked_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let usage = LaneUsage {
            interactive: end_of_interactive.saturating_duration_since(started),
            batch: now.saturating_duration_since(end_of_interactive),
            parked: self.parked + still_parked,
            demoted: self.demoted_at.is_some(),
            permit_waits: self.permit_waits,
        };
        *self = Self::default();
        usage
    }
}

/// Counts a parked call for as long as it waits (also when it is dropped
/// waiting: deadline, cancel).
struct Waiting(Arc<Counters>);

impl Waiting {
    fn new(counters: &Arc<Counters>) -> Self {
        counters.waiting.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counters))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_lane_keeps_a_thread_for_short_calls() {
        let tick = Duration::from_millis(10);
        let two = LaneConfig::new(2, None, tick, tick);
        assert_eq!(two.batch_threads, 1, "all but one of 2 threads");
        assert_eq!(
            LaneConfig::new(1, None, tick, tick).batch_threads,
            1,
            "at least one"
        );
        assert_eq!(LaneConfig::new(8, Some(3), tick, tick).batch_threads, 3);
        // A quantum of one tick needs two ticks seen: the first may come
        // right after the call started.
        assert_eq!(two.quantum_ticks, 2);
        assert_eq!(
            LaneConfig::new(2, None, Duration::from_millis(25), tick).quantum_ticks,
            4
        );
    }

    #[tokio::test]
    async fn a_demoted_call_waits_for_a_permit_and_returns_it() {
        let lanes = Lanes::new(LaneConfig {
            batch_threads: 1,
            quantum_ticks: 2,
        });
        let start = Instant::now();
        let (mut a, mut b) = (CallLane::default(), CallLane::default());
        for lane in [&mut a, &mut b] {
            lanes.tick(lane, None).await; // interactive
        }
        lanes.tick(&mut a, None).await; // demoted, takes the permit
        assert_eq!(lanes.stats().batch_running, 1);
        let parked = tokio::spawn(lanes.tick(&mut b, None)); // demoted, no permit: parks
        tokio::task::yield_now().await;
        assert!(!parked.is_finished());
        assert_eq!(lanes.stats().batch_waiting, 1);
        let used = a.leave(start);
        assert!(used.demoted && used.permit_waits == 0 && used.parked.is_zero());
        parked.await.expect("gets the permit once it is free");
        let stats = lanes.stats();
        assert_eq!((stats.batch_running, stats.batch_waiting), (1, 0));
        assert_eq!((stats.demotions, stats.permit_waits), (2, 1));
        lanes.tick(&mut b, None).await; // computes under the handed permit
        let used = b.leave(start);
        assert!(used.demoted && used.permit_waits == 1, "{used:?}");
        assert!(used.parked <= used.batch, "{used:?}");
        assert_eq!(lanes.stats().batch_running, 0);
    }
}
