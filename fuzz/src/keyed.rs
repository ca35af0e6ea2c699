//! The keyed limiter: `len() <= max_keys` always; every decision equals that of a reference
//! map of plain `Gcra`s (one per key), except for a new key in a full table: under
//! `Full::RejectNew` it gets `TableFull`, under `Full::Overflow` the decision of one reference
//! `Gcra` shared by all such keys (the overflow limiter, at the per-key quota); with
//! `RejectNew` and `Overflow` every active key is still tracked; evictions are counted and only
//! drop active keys; memory never changes. A second table of the same policy is fed the raw
//! caller's time (jumping back, forward and to both ends of the clock): it stays bounded, only
//! `RejectNew` answers `TableFull`, only `Overflow` decides by the overflow limiter, and no single
//! check waits more than `T + max_clock_jump`.

use std::collections::HashMap;

use arbitrary::Arbitrary;
use keel_core::rate::keyed::{DecidedBy, Full, KeyedConfig, KeyedError, KeyedGcra};
use keel_core::rate::{CheckNError, Quota, Gcra};
use keel_core::time::Instant;

use crate::common::{Clock, Timed};
use crate::gcra::QuotaSpec;

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `check(key)`.
    Check(u8),
    /// `check_n(key, n)`.
    CheckN(u8, u8),
    /// `peek(key)` and `remaining(key)`.
    Peek(u8),
    /// `set_quota`.
    SetQuota(QuotaSpec),
}

/// The configuration.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Config {
    quota: QuotaSpec,
    max_keys: u8,
    /// 0: `Overflow` (the default), 1: `RejectNew`, else `EvictLeastRecentlyUsed`.
    policy: u8,
    keys: u8,
    seed: u128,
}

/// The limiter and its reference.
pub struct Harness {
    k: KeyedGcra<u16>,
    /// The same policy, fed the caller's raw time.
    raw: KeyedGcra<u16>,
    reference: HashMap<u16, Gcra>,
    /// The overflow limiter's reference (`Full::Overflow`).
    overflow: Gcra,
    quota: Quota,
    full: Full,
    evict: bool,
    keys: u16,
    memory: usize,
    evicted: u64,
    void: bool,
}

impl Harness {
    /// `None` when the config is invalid.
    pub fn new(c: &Config, start: Instant) -> Option<Harness> {
        let quota = c.quota.quota()?;
        let full = match c.policy {
            0 => Full::Overflow,
            1 => Full::RejectNew,
            _ => Full::EvictLeastRecentlyUsed,
        };
        let config = KeyedConfig::builder()
            .quota(quota)
            .max_keys(usize::from(c.max_keys))
            .full(full)
            .hash_seed(c.seed)
            .build()
            .ok()?;
        let k = KeyedGcra::new(config, start);
        Some(Harness {
            memory: k.memory_bytes(),
            k,
            raw: KeyedGcra::new(config, start),
            reference: HashMap::new(),
            overflow: Gcra::new(quota, start),
            quota,
            full,
            evict: full == Full::EvictLeastRecentlyUsed,
            keys: u16::from(c.keys % 32) + 1,
            evicted: 0,
            void: false,
        })
    }

    fn burst(&self) -> u32 {
        self.quota.burst().get()
    }

    /// Idle means the reference's TAT is at or before `now`: a full burst left.
    fn idle(&self, key: u16, now: Instant) -> bool {
        self.reference
            .get(&key)
            .is_none_or(|r| r.remaining(now) == self.burst())
    }

    fn check(&mut self, now: Instant, key: u16, n: u32) {
        let was_idle = self.idle(key, now);
        let d = self.k.decide_n(now, &key, n);
        let got = d.result;
        if got == Err(KeyedError::TableFull) {
            assert_eq!(
                self.full,
                Full::RejectNew,
                "TableFull under {:?}",
                self.full
            );
            assert!(was_idle, "TableFull for a key that is tracked");
            assert_eq!(self.k.len(), self.k.capacity());
            return;
        }
        if d.by == DecidedBy::Overflow {
            assert_eq!(
                self.full,
                Full::Overflow,
                "overflow decided under {:?}",
                self.full
            );
            assert!(
                was_idle,
                "the overflow limiter decided for a key that is tracked"
            );
            assert_eq!(self.k.len(), self.k.capacity());
            let want = self.overflow.check_n(now, n).map_err(KeyedError::from);
            assert_eq!(got, want, "overflow disagrees with its reference");
            return;
        }
        let quota = self.quota;
        let r = self
            .reference
            .entry(key)
            .or_insert_with(|| Gcra::new(quota, now));
        let want = r.check_n(now, n).map_err(|e| match e {
            CheckNError::NotUntil { retry_at } => KeyedError::NotUntil { retry_at },
            CheckNError::InsufficientCapacity { burst } => {
                KeyedError::InsufficientCapacity { burst }
            }
            _ => KeyedError::TableFull,
        });
        assert_eq!(
            got, want,
            "keyed disagrees with the reference for key {key}"
        );
    }

    /// Keys the limiter forgot although the reference says they are active were evicted.
    fn resync_evictions(&mut self, now: Instant) {
        let evicted = self.k.stats().evicted;
        let burst = self.burst();
        let mut found = 0;
        for (key, r) in self.reference.iter_mut() {
            if r.remaining(now) < burst && self.k.remaining(now, key) == burst {
                *r = Gcra::new(self.quota, now);
                found += 1;
            }
        }
        assert_eq!(found, evicted - self.evicted, "evictions miscounted");
        assert!(self.evict || evicted == 0);
        self.evicted = evicted;
    }

    fn watch_end(&mut self, newest: u64) {
        let reach = keel_core::time::duration_to_nanos(self.quota.replenish_all()).saturating_add(
            keel_core::time::duration_to_nanos(self.quota.emission_interval()),
        );
        if newest.saturating_add(reach) >= u64::MAX - 2 {
            // Near the end of time the TAT saturates and the reference is void: only exercise.
            self.void = true;
        }
    }

    /// The raw-time table: bounded, policy-true, never stuck.
    fn apply_raw(&mut self, now: Instant, op: Op) {
        let (key, n) = match op {
            Op::Check(key) => (key, 1),
            Op::CheckN(key, n) => (key, u32::from(n % 8)),
            Op::Peek(key) => {
                let key = u16::from(key) % self.keys;
                let _ = (self.raw.peek(now, &key), self.raw.remaining(now, &key));
                return;
            }
            Op::SetQuota(q) => {
                if let Some(quota) = q.quota() {
                    self.raw.set_quota(now, quota);
                }
                return;
            }
        };
        let d = self.raw.decide_n(now, &(u16::from(key) % self.keys), n);
        assert!(
            self.raw.len() <= self.raw.capacity(),
            "raw time: more keys than max_keys"
        );
        assert_eq!(
            self.raw.memory_bytes(),
            self.memory,
            "raw time: memory changed"
        );
        match d.result {
            Err(KeyedError::TableFull) => assert_eq!(self.full, Full::RejectNew),
            Err(KeyedError::NotUntil { retry_at }) if n == 1 => {
                let q = match d.by {
                    DecidedBy::Overflow => self.raw.overflow_quota(),
                    _ => self.raw.quota(),
                };
                let limit = keel_core::time::duration_to_nanos(q.emission_interval())
                    .saturating_add(keel_core::time::duration_to_nanos(
                        keel_core::rate::DEFAULT_MAX_CLOCK_JUMP,
                    ));
                let wait = retry_at.as_nanos().saturating_sub(now.as_nanos());
                assert!(wait <= limit, "raw time: told to wait {wait} ns");
            }
            _ => {}
        }
        if d.by == DecidedBy::Overflow {
            assert_eq!(self.full, Full::Overflow);
        }
    }

    /// Applies `op` at `now` and checks the invariants.
    pub fn apply(&mut self, clock: &mut Clock, now: Instant, op: Op) {
        self.apply_raw(now, op);
        let now = clock.newest();
        self.watch_end(clock.newest);
        if self.void {
            match op {
                Op::Check(key) => drop(self.k.check(now, &u16::from(key))),
                Op::CheckN(key, n) => drop(self.k.check_n(now, &u16::from(key), u32::from(n))),
                Op::Peek(key) => drop(self.k.peek(now, &u16::from(key))),
                Op::SetQuota(q) => match q.quota() {
                    Some(quota) => self.k.set_quota(now, quota),
                    None => clock.unseen(),
                },
            }
            assert!(self.k.len() <= self.k.capacity(), "more keys than max_keys");
            return;
        }
        match op {
            Op::Check(key) => self.check(now, u16::from(key) % self.keys, 1),
            Op::CheckN(key, n) => {
                let n = u32::from(n % 8);
                self.check(now, u16::from(key) % self.keys, n);
            }
            Op::Peek(key) => {
                let key = u16::from(key) % self.keys;
                let peek = self.k.peek(now, &key);
                let rem = self.k.remaining(now, &key);
                let (want_peek, want_rem) = match self.reference.get(&key) {
                    Some(r) => (r.peek(now), r.remaining(now)),
                    None => (Ok(()), self.burst()),
                };
                let outside = self.full == Full::Overflow
                    && self.idle(key, now)
                    && self.k.len() == self.k.capacity();
                if outside {
                    // A key outside a full table may be answered by the overflow limiter.
                } else if peek != Err(KeyedError::TableFull) {
                    assert_eq!(
                        peek,
                        want_peek.map_err(|e| KeyedError::NotUntil {
                            retry_at: e.retry_at
                        })
                    );
                }
                assert_eq!(rem, want_rem, "remaining disagrees for key {key}");
            }
            Op::SetQuota(q) => {
                let Some(quota) = q.quota() else {
                    clock.unseen();
                    return;
                };
                let idle: Vec<u16> = self
                    .reference
                    .keys()
                    .copied()
                    .filter(|k| self.idle(*k, now))
                    .collect();
                self.k.set_quota(now, quota);
                self.overflow.set_quota(now, quota);
                self.quota = quota;
                self.watch_end(clock.newest);
                if self.void {
                    return;
                }
                for (key, r) in self.reference.iter_mut() {
                    r.set_quota(now, quota);
                    // An idle key may have been forgotten already: it then starts fresh under
                    // the new quota (a tracked idle key carries the old burst's limit over).
                    if idle.contains(key) && self.k.remaining(now, key) == quota.burst().get() {
                        *r = Gcra::new(quota, now);
                    }
                }
            }
        }
        self.resync_evictions(now);
        assert!(self.k.len() <= self.k.capacity(), "more keys than max_keys");
        assert_eq!(self.k.memory_bytes(), self.memory, "memory changed");
        if !self.evict {
            let burst = self.burst();
            let active = self
                .reference
                .values()
                .filter(|r| r.remaining(now) < burst)
                .count();
            assert!(active <= self.k.len(), "an active key was forgotten");
        }
    }

    /// Nothing more to check at the end.
    pub fn finish(&mut self) {}
}

impl Timed for Op {
    fn timed(&self) -> bool {
        !matches!(self, Op::Peek(_))
    }
}

crate::single_machine_target!("keyed", Config);
