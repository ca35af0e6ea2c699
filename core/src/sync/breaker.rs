//! [`SharedBreaker`]: one [`CircuitBreaker`] shared by many tasks and threads (feature `std`).
//!
//! A clone is a handle to the same breaker: a [`CircuitBreaker`] behind a mutex, plus a
//! lock-free **closed path**. Every method that takes the lock holds it for a few arithmetic
//! steps and never across an `.await` or a call, so the admission check and the state change it
//! causes are one atomic step: the seed's race (load the state, then store a new one) cannot
//! happen. A mutex poisoned by a panic elsewhere is recovered (the breaker's state is always
//! consistent between methods), never propagated.
//!
//! # The closed path (no lock)
//!
//! While the breaker is `Closed`, one atomic word holds a "closed path open" bit, the low bits
//! of the generation and the failure run (and, with a rate policy, a "quiet window" bit: see
//! below). Then, with no rate policy (consecutive failures only, or no policy):
//!
//! - an admission is a load of that word and of the generation, a clamp of `now` and a count;
//! - a success of the current generation is the same, plus a compare-and-swap that resets the
//!   failure run only when it is not already zero; a failure that cannot trip increments the
//!   run with a compare-and-swap; an ignored outcome is a count;
//! - everything else (the failure that reaches the threshold, a stale or abandoned outcome,
//!   `force_open`, `disable`, `reset`, and every call while not closed) takes the lock, **closes
//!   the path** (clears the bit with a compare-and-swap, which fails the lock-free steps in
//!   flight and sends them to the lock), hands the failure run and the newest `now` to the
//!   machine, runs it, and reopens the path if the machine is still (or again) closed.
//!
//! **No shared write on the all-success path.** The counts (`admitted`, `successes`,
//! `failures`, `ignored`, `slow`) and the newest `now` a thread saw live in per-thread
//! *stripes* (`super::stripe`): eight copies each *owned* by one thread at a time (a thread
//! claims a stripe number on first use and gives it back when it ends) plus one shared copy
//! for threads beyond eight, each on a 128-byte line pair of its own. So while the failure run
//! is zero, an admission and its success only *read* the shared word and write the calling
//! thread's own line, and on an owned stripe without a read-modify-write (a plain load and
//! store: the owner is its only writer); two threads calling at once no longer bounce a cache
//! line between their cores. A stripe costs 128 bytes: about 1.1 KiB per breaker. The stripes
//! are never reset: [`with`](SharedBreaker::with) folds into the machine what they gained since
//! the last fold.
//!
//! So the decisions are the `&mut` machine's: the failure run is only changed by a
//! compare-and-swap on the word the trip decision also reads, and the trip itself is the
//! machine's, under the lock, with the path closed. A call admitted lock-free just before a trip
//! is admitted in the old generation, as if it came first (its outcome is then stale).
//!
//! **What [`stats`](SharedBreaker::stats) may lag by.** The counts are exact once no call is in
//! flight. A `stats` read concurrently with calls sums the stripes one after another, so it may
//! miss the counts of calls decided but not yet counted: at most one admission and one outcome
//! per thread calling at that moment. Each stripe only grows, so successive snapshots never go
//! backwards. [`with`](SharedBreaker::with) folds the stripes into the machine first.
//!
//! **Time.** Each lock-free call's `now` is clamped to the newest instant the machine has seen
//! (written under the lock) and the newest its own stripe has seen; the machine, before every
//! locked step, is brought up to the newest of all stripes. With one thread this is the `&mut`
//! machine's clamp exactly; across threads, two racing calls may see each other's `now` in
//! either order (as two calls racing to a lock did).
//!
//! # Rate policies: admissions and quiet successes without the lock, other outcomes with it
//!
//! A config with a failure- or slow-call-rate policy (including [`BreakerConfig::default`])
//! keeps a sliding window. Its closed **admissions** are still lock-free (closed, the machine
//! admits with a clamp and a count whatever the policy), and so is a **success while the
//! window is quiet**: a count window that is full and holds no failure and no slow call (a
//! healthy service's steady state). Then every slot holds a success, so a success that is not
//! slow leaves the window's totals as they are, cannot trip (no failure, no slow call, and a
//! rate threshold is at least 1 %) and leaves the failure run at zero: only the ring's position
//! would move, and a ring whose slots are all alike looks the same from any position. The word
//! carries a `QUIET` bit for that state (set by the lock holder, with the open bit); such a
//! success is a read of the word and a count in the thread's stripe, as a success with a zero
//! failure run is without a window.
//!
//! Every other outcome (a failure, a slow call, any outcome while the window is filling or
//! still holds a failure or a slow call, every outcome with a time window) takes the lock. A
//! lock-free outcome that decides exactly as the `&mut` machine does is not possible there:
//!
//! - it changes the window (it is recorded, and the oldest is evicted by count or by time), so
//!   unlike a quiet success it is a shared write whatever the design;
//! - the trip decision after it reads the whole window as it is after exactly that outcome
//!   (totals of up to `count_window` calls, default 100, or of the time buckets), and its
//!   eviction, totals and decision must change together. One compare-and-swap can only do
//!   that for a window packed into one word (about 30 calls with a failure bit and a slow bit
//!   each); claiming ring slots with a counter lets a later outcome's decision run before an
//!   earlier one is written, which the `&mut` machine never sees.
//!
//! Such an outcome takes the lock once. Since no lock-free step writes the word with a window
//! (admissions and quiet successes only read it), the lock holder is its only writer: the
//! outcome does not close the path first (no compare-and-swap) and rewrites the word only when
//! the machine's state, generation or quietness changed (a trip shuts the path; a failure
//! clears `QUIET`, and the success that evicts the window's last failure sets it again). An
//! admission or a quiet success that reads the word while an outcome holds the lock is
//! decided as if it came before that outcome, as one that read the word just before a close
//! would be (a quiet success changes nothing the outcome reads). The lock, a load of each
//! stripe's newest instant and the machine's step are what such an outcome costs.
//!
//! The adapters build `breaker.call(future)` on this type: acquire, run the future, report its
//! outcome with the permit (a dropped future reports through
//! [`on_abandoned`](SharedBreaker::on_abandoned)).
//!
//! ```
//! use keel_core::breaker::{BreakerConfig, State};
//! use keel_core::sync::breaker::SharedBreaker;
//! use keel_core::Instant;
//!
//! let config = BreakerConfig::consecutive_failures(2).build()?;
//! let breaker = SharedBreaker::new(config, Instant::ZERO);
//! let other = breaker.clone();
//! let t = Instant::from_secs(1);
//! for _ in 0..2 {
//!     let permit = other.try_acquire(t).expect("closed");
//!     other.on_failure(t, permit);
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let mut events = 0;
//! breaker.drain_events(|_| events += 1);
//! assert_eq!(events, 1);
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use crate::breaker::{
    BreakerConfig, BreakerEvent, BreakerPermit, BreakerStats, CircuitBreaker, Outcome, Rejected,
    State,
};
use crate::sync::shim::{spin_hint, Arc, AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering};
use crate::sync::stripe::{bump, raise, Mine, Striped};
use crate::time::Instant;

/// The closed path is open (lock-free admissions and outcomes allowed).
const OPEN: u64 = 1 << 63;
/// With a window: it is a count window full of successes, with no failure run (set with
/// [`OPEN`] only), so a success that is not slow changes nothing but the counts and is
/// recorded without the lock.
const QUIET: u64 = 1 << 62;
/// The low 30 bits of the generation, in bits 32..62.
const EPOCH: u64 = 0x3FFF_FFFF << 32;
/// The failure run, in bits 0..32.
const RUN: u64 = 0xFFFF_FFFF;

#[inline]
const fn epoch_of(generation: u64) -> u64 {
    (generation << 32) & EPOCH
}

/// A thread-safe handle to one [`CircuitBreaker`]; clones share it.
#[derive(Clone, Debug)]
pub struct SharedBreaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `OPEN | epoch_of(generation) | failure run`, written with the lock held except for the
    /// failure run's compare-and-swaps on the closed path.
    word: AtomicU64,
    /// The generation the closed path issues permits in (written with the lock held, before the
    /// path opens).
    generation: AtomicU64,
    /// The newest `now` the machine has seen (nanoseconds), written under the lock; the
    /// closed path's newer instants are in the stripes.
    newest: AtomicU64,
    /// The closed path's counts and newest instants, one copy per stripe of threads so the
    /// all-success path writes no line another thread reads (see the module docs).
    counts: Striped<Counts>,
    /// The stripes' sums already folded into the machine by [`SharedBreaker::with`] (written
    /// and read with the lock held; `newest` unused). The stripes are never reset (an owned
    /// stripe has one writer, its thread), so the machine's counts plus `sum - folded` are
    /// the totals.
    folded: Counts,
    /// Events may be queued (set under the lock after a transition, cleared by a drain that
    /// emptied the queue), so a drain with nothing to do takes no lock.
    events: AtomicBool,
    /// The config's trip threshold for the failure run.
    threshold: Option<u32>,
    /// The config has a rate policy (a sliding window): the closed path then admits without
    /// the lock, and records a success without it only while the window is quiet; every other
    /// outcome takes it (see the module docs).
    window: bool,
    /// The slow-call threshold in nanoseconds.
    slow_nanos: u128,
    machine: Mutex<CircuitBreaker>,
}

/// One stripe of the closed path's counts (added to the machine's in [`SharedBreaker::stats`])
/// and the newest `now` its threads saw.
#[derive(Debug, Default)]
struct Counts {
    admitted: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    ignored: AtomicU64,
    slow: AtomicU64,
    newest: AtomicU64,
}

impl Inner {
    /// Clamps `now` to the newest instant the machine and this thread's stripe have seen,
    /// recording it in the stripe if newer.
    #[inline]
    fn observe(&self, now: Instant, mine: &Mine<'_, Counts>) -> Instant {
        let n = now.as_nanos();
        let seen = self
            .newest
            .load(Ordering::Relaxed)
            .max(mine.c.newest.load(Ordering::Relaxed));
        if n <= seen {
            return Instant::from_nanos(seen);
        }
        Instant::from_nanos(raise(mine.owned, &mine.c.newest, n, Ordering::Relaxed))
    }

    /// The newest `now` seen by the machine or any stripe.
    fn newest_all(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| c.newest.load(Ordering::Acquire))
            .fold(self.newest.load(Ordering::Acquire), u64::max)
    }

    /// One count's stripes not yet folded into the machine (call with the lock held); `fold`
    /// marks them folded.
    fn unfolded(&self, field: fn(&Counts) -> &AtomicU64, fold: bool) -> u64 {
        let sum = self.counts.iter().fold(0u64, |acc, c| {
            acc.saturating_add(field(c).load(Ordering::Relaxed))
        });
        let folded = field(&self.folded);
        let before = if fold {
            folded.swap(sum, Ordering::Relaxed)
        } else {
            folded.load(Ordering::Relaxed)
        };
        // Each stripe only grows, and `before` was summed under this lock earlier.
        sum.saturating_sub(before)
    }

    #[inline]
    fn is_slow(&self, now: Instant, permit: BreakerPermit) -> bool {
        u128::from(
            now.as_nanos()
                .saturating_sub(permit.admitted_at().as_nanos()),
        ) >= self.slow_nanos
    }

    /// The generation of the open closed path, or `None` when it is closed (or being changed).
    #[inline]
    fn open_generation(&self, word: u64) -> Option<u64> {
        if word & OPEN == 0 {
            return None;
        }
        let generation = self.generation.load(Ordering::Acquire);
        (epoch_of(generation) == word & EPOCH).then_some(generation)
    }

    /// Closes the closed path; returns the failure run it held if it was open.
    fn close_path(&self) -> Option<u32> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if word & OPEN == 0 {
                return None;
            }
            match self.word.compare_exchange_weak(
                word,
                word & !OPEN,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // The run is the low 32 bits: the cast keeps exactly them.
                Ok(_) => return Some((word & RUN) as u32),
                Err(w) => {
                    word = w;
                    spin_hint();
                }
            }
        }
    }

    /// Sets the closed path to what the machine allows (called with the lock held, at the
    /// end of a locked step): open in the machine's generation with its failure run, or shut.
    /// `word` is the word as the step left it (shut by [`close_path`](Self::close_path), or,
    /// with a window, as it was: see [`SharedBreaker::locked`]); a store that would not change
    /// it is skipped, so an outcome that leaves the breaker closed writes no line the
    /// lock-free admissions read.
    fn open_path(&self, m: &mut CircuitBreaker, word: u64) {
        // With a window, only admissions go lock-free: closed, they are a clamp and a count
        // whatever the policy (`CircuitBreaker::try_acquire`'s own fast path).
        let admit_only = self.window && m.state() == State::Closed && self.threshold != Some(0);
        let h = m.shared_hooks();
        if admit_only || h.lock_free_closed() {
            let generation = h.generation();
            // Only with a window: without one every success of the open path is lock-free.
            let quiet = if admit_only && h.success_changes_only_counts() {
                QUIET
            } else {
                0
            };
            let next = OPEN | epoch_of(generation) | quiet | u64::from(h.consecutive_failures());
            if next == word && self.generation.load(Ordering::Relaxed) == generation {
                return;
            }
            self.generation.store(generation, Ordering::Relaxed);
            self.word.store(next, Ordering::Release);
        } else if word & OPEN != 0 {
            // Only with a window (the path was left open during the step): shut it now, and
            // the window is no longer quiet for a closed path.
            self.word.store(word & !(OPEN | QUIET), Ordering::Release);
        }
    }
}

impl SharedBreaker {
    /// A shared, closed breaker.
    #[must_use]
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        SharedBreaker::from_breaker(CircuitBreaker::new(config, now))
    }

    /// Shares an existing breaker.
    #[must_use]
    pub fn from_breaker(mut breaker: CircuitBreaker) -> Self {
        let threshold = breaker.config().consecutive_failures;
        let window = breaker.config().window_needed();
        let h = breaker.shared_hooks();
        let inner = Inner {
            word: AtomicU64::new(0),
            generation: AtomicU64::new(h.generation()),
            newest: AtomicU64::new(h.newest().as_nanos()),
            counts: Striped::new(Counts::default),
            folded: Counts::default(),
            events: AtomicBool::new(h.has_events()),
            threshold,
            window,
            slow_nanos: h.slow_nanos(),
            machine: Mutex::new(breaker),
        };
        {
            let mut m = inner
                .machine
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            inner.open_path(&mut m, 0);
        }
        SharedBreaker {
            inner: Arc::new(inner),
        }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, CircuitBreaker> {
        // A panic while the lock was held cannot leave the breaker half-updated in a way that
        // matters more than refusing service would: recover the guard.
        self.inner
            .machine
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the machine with the closed path's state handed over, then reopens the
    /// path if the machine is closed (or shuts it if not).
    ///
    /// Without a window the path is closed first (a compare-and-swap): the lock-free outcomes
    /// change the failure run in the word, and closing it fails those in flight. With a
    /// window no lock-free step writes the word (admissions and quiet successes only read it;
    /// every other outcome comes here), so the lock holder is its only writer: the path is
    /// left as it is during `f` and changed at the end only if the machine's state,
    /// generation or quietness changed. An admission (or a quiet success) that reads the open
    /// word meanwhile is decided in the old generation, as if it came before this step:
    /// exactly what one that read the word just before a `close_path` does.
    fn locked<R>(&self, f: impl FnOnce(&mut CircuitBreaker) -> R) -> R {
        let s = &*self.inner;
        let mut m = self.lock();
        let (run, word) = if s.window {
            // Only lock holders write the word here: the lock orders this load after them.
            let word = s.word.load(Ordering::Relaxed);
            // The run is the low 32 bits: the cast keeps exactly them.
            ((word & OPEN != 0).then_some((word & RUN) as u32), word)
        } else {
            (s.close_path(), 0)
        };
        let r = {
            let mut h = m.shared_hooks();
            if let Some(run) = run {
                h.set_consecutive_failures(run);
            }
            h.observe(Instant::from_nanos(s.newest_all()));
            let r = f(&mut m);
            if m.shared_hooks().has_events() {
                s.events.store(true, Ordering::Release);
            }
            r
        };
        // Only lock holders write `newest`, and the machine's clock never goes back: a plain
        // store of a newer value, no read-modify-write.
        let newest = m.shared_hooks().newest().as_nanos();
        if s.newest.load(Ordering::Relaxed) < newest {
            s.newest.store(newest, Ordering::Release);
        }
        s.open_path(&mut m, word);
        r
    }

    /// Runs `f` with the breaker locked (keep it short: no I/O, no `.await`). The closed
    /// path's counts are folded into the machine first, so `f` sees exact [`stats`](CircuitBreaker::stats).
    pub fn with<R>(&self, f: impl FnOnce(&mut CircuitBreaker) -> R) -> R {
        let s = &*self.inner;
        self.locked(|m| {
            m.shared_hooks().add_counts(
                s.unfolded(|c| &c.admitted, true),
                s.unfolded(|c| &c.successes, true),
                s.unfolded(|c| &c.failures, true),
                s.unfolded(|c| &c.ignored, true),
                s.unfolded(|c| &c.slow, true),
            );
            f(m)
        })
    }

    /// See [`CircuitBreaker::try_acquire`].
    ///
    /// # Errors
    ///
    /// [`Rejected`] while open, forced open, or half-open with every probe slot taken.
    #[must_use = "a permit must be reported; a rejection must be handled"]
    #[inline]
    pub fn try_acquire(&self, now: Instant) -> Result<BreakerPermit, Rejected> {
        let s = &*self.inner;
        if let Some(generation) = s.open_generation(s.word.load(Ordering::Acquire)) {
            let mine = s.counts.mine();
            let now = s.observe(now, &mine);
            bump(mine.owned, &mine.c.admitted, Ordering::Relaxed);
            return Ok(BreakerPermit::issued(generation, now));
        }
        self.try_acquire_locked(now)
    }

    #[inline(never)]
    fn try_acquire_locked(&self, now: Instant) -> Result<BreakerPermit, Rejected> {
        self.locked(|m| m.try_acquire(now))
    }

    /// The closed path of an outcome: `true` if it was recorded without the lock.
    #[inline]
    fn outcome_lock_free(&self, now: Instant, permit: BreakerPermit, outcome: Outcome) -> bool {
        let s = &*self.inner;
        if s.window {
            // With a window, a quiet success is recorded out of line, in `on_outcome_slow`
            // before it takes the lock (a call here made this too big to inline).
            return false;
        }
        let mut word = s.word.load(Ordering::Acquire);
        loop {
            match s.open_generation(word) {
                Some(g) if g == permit.generation() => {}
                // Closed path shut, or a stale permit (counted by the machine).
                _ => return false,
            }
            // The run is the low 32 bits: the cast keeps exactly them.
            let run = (word & RUN) as u32;
            let next = match outcome {
                Outcome::Ignored => None,
                Outcome::Success if run == 0 => None,
                Outcome::Success => Some(word & !RUN),
                Outcome::Failure => match run.checked_add(1) {
                    Some(n) if self.inner.threshold.is_none_or(|t| n < t) => {
                        Some((word & !RUN) | u64::from(n))
                    }
                    // This failure may trip the breaker: the machine decides, under the lock.
                    _ => return false,
                },
            };
            if let Some(next) = next {
                if let Err(w) =
                    s.word
                        .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    word = w;
                    spin_hint();
                    continue;
                }
            }
            break;
        }
        let mine = s.counts.mine();
        let now = s.observe(now, &mine);
        let c = mine.c;
        match outcome {
            Outcome::Success => bump(mine.owned, &c.successes, Ordering::Relaxed),
            Outcome::Failure => bump(mine.owned, &c.failures, Ordering::Relaxed),
            Outcome::Ignored => {
                bump(mine.owned, &c.ignored, Ordering::Relaxed);
                return true;
            }
        }
        if s.is_slow(now, permit) {
            bump(mine.owned, &c.slow, Ordering::Relaxed);
        }
        true
    }

    /// The closed path of an outcome with a window: `true` if it was a success that is not
    /// slow, of the open path's generation, while the count window is full of successes
    /// ([`QUIET`]), counted without the lock. Every other outcome changes the window: the
    /// machine records it, under the lock.
    #[inline]
    fn quiet_success(&self, now: Instant, permit: BreakerPermit, outcome: Outcome) -> bool {
        let s = &*self.inner;
        if outcome != Outcome::Success {
            return false;
        }
        let word = s.word.load(Ordering::Acquire);
        if word & QUIET == 0 || s.open_generation(word) != Some(permit.generation()) {
            return false;
        }
        let mine = s.counts.mine();
        if s.is_slow(s.observe(now, &mine), permit) {
            // A slow call is recorded in the window: the machine's, under the lock.
            return false;
        }
        bump(mine.owned, &mine.c.successes, Ordering::Relaxed);
        true
    }

    /// See [`CircuitBreaker::on_success`].
    #[inline]
    pub fn on_success(&self, now: Instant, permit: BreakerPermit) {
        self.on_outcome(now, permit, Outcome::Success);
    }

    /// See [`CircuitBreaker::on_failure`].
    #[inline]
    pub fn on_failure(&self, now: Instant, permit: BreakerPermit) {
        self.on_outcome(now, permit, Outcome::Failure);
    }

    /// See [`CircuitBreaker::on_ignored`].
    #[inline]
    pub fn on_ignored(&self, now: Instant, permit: BreakerPermit) {
        self.on_outcome(now, permit, Outcome::Ignored);
    }

    /// See [`CircuitBreaker::on_abandoned`].
    pub fn on_abandoned(&self, now: Instant, permit: BreakerPermit) -> Outcome {
        self.locked(|m| m.on_abandoned(now, permit))
    }

    /// See [`CircuitBreaker::on_outcome`].
    #[inline]
    pub fn on_outcome(&self, now: Instant, permit: BreakerPermit, outcome: Outcome) {
        if !self.outcome_lock_free(now, permit, outcome) {
            self.on_outcome_slow(now, permit, outcome);
        }
    }

    /// The outcomes [`outcome_lock_free`](Self::outcome_lock_free) did not record: with a
    /// window, a quiet success (still without the lock); every other one the machine's, under
    /// the lock.
    /// Out of line, so the quiet success costs a call only where it is taken: inline, it made
    /// `on_outcome` too big for the closed path without a window (an admission and a success
    /// a few ns) to inline into its caller's loop.
    #[inline(never)]
    fn on_outcome_slow(&self, now: Instant, permit: BreakerPermit, outcome: Outcome) {
        if self.inner.window && self.quiet_success(now, permit, outcome) {
            return;
        }
        self.locked(|m| m.on_outcome(now, permit, outcome));
    }

    /// See [`CircuitBreaker::handle_timeout`].
    pub fn handle_timeout(&self, now: Instant) {
        let s = &*self.inner;
        if s.word.load(Ordering::Acquire) & OPEN != 0 {
            // Closed: no timer is armed; the machine would only clamp its clock.
            s.observe(now, &s.counts.mine());
            return;
        }
        self.locked(|m| m.handle_timeout(now));
    }

    /// See [`CircuitBreaker::poll_timeout`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = &*self.inner;
        if s.word.load(Ordering::Acquire) & OPEN != 0 {
            // Closed: no timer is armed.
            return None;
        }
        let mut m = self.lock();
        m.shared_hooks()
            .observe(Instant::from_nanos(s.newest_all()));
        m.poll_timeout()
    }

    /// See [`CircuitBreaker::poll_event`].
    #[must_use]
    pub fn poll_event(&self) -> Option<BreakerEvent> {
        let s = &*self.inner;
        if !s.events.load(Ordering::Acquire) {
            return None;
        }
        let mut m = self.lock();
        let ev = m.poll_event();
        if !m.shared_hooks().has_events() {
            s.events.store(false, Ordering::Release);
        }
        ev
    }

    /// Pops every queued event under one lock and hands each to `f` (after the lock is
    /// released, so `f` may log or call back into the breaker). Takes no lock when no event
    /// was queued since the last drain.
    #[inline]
    pub fn drain_events(&self, f: impl FnMut(BreakerEvent)) {
        // The common case (nothing queued) is one load, inlined into the caller.
        if self.inner.events.load(Ordering::Acquire) {
            self.drain_events_queued(f);
        }
    }

    /// [`drain_events`](Self::drain_events) once events may be queued.
    #[inline(never)]
    fn drain_events_queued(&self, mut f: impl FnMut(BreakerEvent)) {
        let s = &*self.inner;
        let mut batch = [None; crate::breaker::EVENT_QUEUE_CAPACITY];
        {
            let mut b = self.lock();
            for slot in &mut batch {
                *slot = b.poll_event();
                if slot.is_none() {
                    break;
                }
            }
            if !b.shared_hooks().has_events() {
                s.events.store(false, Ordering::Release);
            }
        }
        for ev in batch.into_iter().flatten() {
            f(ev);
        }
    }

    /// See [`CircuitBreaker::state`].
    #[must_use]
    pub fn state(&self) -> State {
        if self.inner.word.load(Ordering::Acquire) & OPEN != 0 {
            return State::Closed;
        }
        self.lock().state()
    }

    /// See [`CircuitBreaker::stats`]: the machine's, with the closed path's counts and failure
    /// run (exact once no call is in flight; see the [module docs](self)).
    #[must_use]
    pub fn stats(&self) -> BreakerStats {
        let s = &*self.inner;
        let m = self.lock();
        let mut st = m.stats();
        let word = s.word.load(Ordering::Acquire);
        if word & OPEN != 0 {
            // The run is the low 32 bits: the cast keeps exactly them.
            st.consecutive_failures = (word & RUN) as u32;
        }
        st.admitted = st
            .admitted
            .saturating_add(s.unfolded(|c| &c.admitted, false));
        st.successes = st
            .successes
            .saturating_add(s.unfolded(|c| &c.successes, false));
        st.failures = st
            .failures
            .saturating_add(s.unfolded(|c| &c.failures, false));
        st.ignored = st.ignored.saturating_add(s.unfolded(|c| &c.ignored, false));
        st.slow = st.slow.saturating_add(s.unfolded(|c| &c.slow, false));
        st
    }

    /// See [`CircuitBreaker::force_open`].
    pub fn force_open(&self, now: Instant) {
        self.locked(|m| m.force_open(now));
    }

    /// See [`CircuitBreaker::disable`].
    pub fn disable(&self, now: Instant) {
        self.locked(|m| m.disable(now));
    }

    /// See [`CircuitBreaker::reset`].
    pub fn reset(&self, now: Instant) {
        self.locked(|m| m.reset(now));
    }
}

impl From<CircuitBreaker> for SharedBreaker {
    fn from(breaker: CircuitBreaker) -> Self {
        SharedBreaker::from_breaker(breaker)
    }
}

#[cfg(test)]
#[cfg(not(keel_loom))]
mod tests {
    use super::*;
    use core::time::Duration;
    use std::thread;

    #[test]
    fn recovers_from_a_poisoned_lock() {
        let config = BreakerConfig::consecutive_failures(1).build().unwrap();
        let b = SharedBreaker::new(config, Instant::ZERO);
        let b2 = b.clone();
        let r = thread::spawn(move || {
            b2.with(|_| panic!("poison the lock"));
        })
        .join();
        assert!(r.is_err());
        let p = b.try_acquire(Instant::ZERO).unwrap();
        b.on_failure(Instant::ZERO, p);
        assert_eq!(b.state(), State::Open);
    }

    /// A lock-free step loads the word, then the generation: if the path was closed and
    /// reopened in a new generation between the two loads, the word's epoch no longer matches
    /// and the step goes to the lock (else a stale word would pass for the open path).
    #[test]
    fn a_word_read_before_the_path_reopened_in_a_new_generation_is_not_the_open_path() {
        let config = BreakerConfig::consecutive_failures(1).build().unwrap();
        let b = SharedBreaker::new(config, Instant::ZERO);
        let s = &*b.inner;
        let before = s.word.load(Ordering::Acquire);
        assert_eq!(s.open_generation(before), Some(b.stats().generation));
        let p = b.try_acquire(Instant::ZERO).unwrap();
        b.on_failure(Instant::ZERO, p);
        assert_eq!(b.state(), State::Open);
        b.reset(Instant::ZERO);
        let after = s.word.load(Ordering::Acquire);
        let generation = b.stats().generation;
        assert_eq!(s.open_generation(after), Some(generation));
        assert_ne!(after, before);
        assert_eq!(s.open_generation(before), None);
    }

    /// A count window of 4 judged from 2 calls at 50 % failures and 100 % slow calls (slow:
    /// 1 s or longer).
    fn windowed() -> SharedBreaker {
        let config = BreakerConfig::builder()
            .count_window(4)
            .minimum_calls(2)
            .failure_rate_threshold(50)
            .slow_call_rate_threshold(100)
            .slow_call_duration_threshold(Duration::from_secs(1))
            .build()
            .unwrap();
        SharedBreaker::new(config, Instant::ZERO)
    }

    fn quiet(b: &SharedBreaker) -> bool {
        b.inner.word.load(Ordering::Acquire) & QUIET != 0
    }

    fn call(b: &SharedBreaker, at: u64, took: u64, outcome: Outcome) {
        let p = b.try_acquire(Instant::from_millis(at)).unwrap();
        b.on_outcome(Instant::from_millis(at + took), p, outcome);
    }

    #[test]
    fn the_window_is_quiet_exactly_while_it_is_full_of_successes() {
        let b = windowed();
        for n in 0..3 {
            call(&b, n * 10, 1, Outcome::Success);
            assert!(!quiet(&b), "filling: {} of 4", n + 1);
        }
        call(&b, 30, 1, Outcome::Success);
        assert!(quiet(&b), "full of successes");
        call(&b, 40, 1, Outcome::Success);
        assert!(quiet(&b));
        // A failure (25 %: no trip) is in the window for the next 4 outcomes.
        call(&b, 50, 1, Outcome::Failure);
        assert_eq!(b.state(), State::Closed);
        for n in 0..3 {
            assert!(!quiet(&b));
            call(&b, 60 + n * 10, 1, Outcome::Success);
        }
        assert!(!quiet(&b), "the failure is the oldest outcome");
        call(&b, 90, 1, Outcome::Success);
        assert!(quiet(&b), "the failure was evicted");
        // A slow success is recorded too (the machine's, under the lock): not quiet.
        call(&b, 100, 1_000, Outcome::Success);
        assert!(!quiet(&b));
        assert_eq!(b.stats().slow, 1);
        // An ignored outcome leaves the window alone.
        for n in 0..4 {
            call(&b, 2_000 + n * 10, 1, Outcome::Success);
        }
        assert!(quiet(&b));
        call(&b, 2_100, 1, Outcome::Ignored);
        assert!(quiet(&b));
        let st = b.stats();
        assert_eq!(
            (st.admitted, st.successes, st.failures, st.ignored),
            (16, 14, 1, 1)
        );
        // Not closed: never quiet.
        b.force_open(Instant::from_secs(3));
        assert!(!quiet(&b));
    }

    /// While the window is quiet, a success is a count in the caller's stripe: it completes
    /// while another thread holds the machine's lock. (Taking the lock, it would wait for the
    /// holder, who gives up after 10 s and fails the test.)
    #[test]
    fn a_quiet_success_takes_no_lock() {
        let b = windowed();
        for n in 0..4 {
            call(&b, n, 1, Outcome::Success);
        }
        assert!(quiet(&b));
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let b = b.clone();
            thread::spawn(move || {
                let _machine = b.lock();
                held_tx.send(()).unwrap();
                done_rx.recv_timeout(Duration::from_secs(10)).is_ok()
            })
        };
        held_rx.recv().unwrap();
        call(&b, 10, 1, Outcome::Success);
        let _ = done_tx.send(());
        assert!(holder.join().unwrap(), "the success waited for the lock");
        let st = b.stats();
        assert_eq!((st.admitted, st.successes), (5, 5));
        assert_eq!(b.with(|m| m.stats()), st);
    }

    /// A permit of an earlier generation reported while the window is quiet again is stale:
    /// the machine counts it, under the lock; it is neither a success nor a change of the
    /// window.
    #[test]
    fn a_late_permit_of_an_old_generation_is_stale_even_while_quiet() {
        let b = windowed();
        for n in 0..4 {
            call(&b, n, 1, Outcome::Success);
        }
        assert!(quiet(&b));
        let late = b.try_acquire(Instant::from_millis(10)).unwrap();
        b.force_open(Instant::from_millis(11));
        b.reset(Instant::from_millis(12));
        for n in 0..4 {
            call(&b, 20 + n, 1, Outcome::Success);
        }
        assert!(quiet(&b));
        let before = b.stats();
        assert_ne!(late.generation(), before.generation);
        b.on_success(Instant::from_millis(30), late);
        let after = b.stats();
        assert_eq!(after.stale_outcomes, before.stale_outcomes + 1);
        assert_eq!(after.successes, before.successes);
        assert!(quiet(&b));
    }

    #[test]
    fn threads_share_one_half_open_probe_budget() {
        let config = BreakerConfig::consecutive_failures(1)
            .permitted_calls_in_half_open(3)
            .build()
            .unwrap();
        let b = SharedBreaker::new(config, Instant::ZERO);
        b.force_open(Instant::ZERO);
        b.reset(Instant::ZERO);
        let p = b.try_acquire(Instant::ZERO).unwrap();
        b.on_failure(Instant::ZERO, p);
        let t = Instant::from_secs(60);
        let handles: std::vec::Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || (0..4).filter(|_| b.try_acquire(t).is_ok()).count())
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 3);
        assert_eq!(b.stats().probes_in_use, 3);
    }
}
