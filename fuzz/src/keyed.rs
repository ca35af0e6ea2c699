//! The keyed limiter: `len() <= max_keys` always; every decision, `peek` and `remaining` is its
//! reference model's (`keel_testkit::models::keyed::KeyedModel`, shared with the proptests: one
//! GCRA model per key, and for a new key in a full table `TableFull` under `Full::RejectNew` or
//! the decision of one overflow GCRA model under `Full::Overflow`), quota changes included; a
//! policy answers only for a full table; with `RejectNew` and `Overflow` every active key is
//! still tracked; evictions are counted and only drop active keys; memory never changes. A second table of the same policy is fed the raw
//! caller's time (jumping back, forward and to both ends of the clock): it stays bounded, only
//! `RejectNew` answers `TableFull`, only `Overflow` decides by the overflow limiter, and no single
//! check waits more than `T + max_clock_jump`.

use arbitrary::Arbitrary;
use keel_core::rate::keyed::{DecidedBy, Full, KeyedConfig, KeyedGcra, KeyedLimited};
use keel_core::rate::Quota;
use keel_core::time::Instant;
use keel_core::Rejected;
use keel_testkit::models::keyed::KeyedModel;

use crate::common::{Clock, Timed};
use crate::gcra::QuotaSpec;

/// One input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// `try_acquire(key)`.
    Check(u8),
    /// `try_acquire_n(key, n)`.
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

/// The limiter and its reference model.
pub struct Harness {
    k: KeyedGcra<u16>,
    /// The same policy, fed the caller's raw time.
    raw: KeyedGcra<u16>,
    model: KeyedModel<u16>,
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
            model: KeyedModel::new(&config, start),
            quota,
            full,
            evict: full == Full::EvictLeastRecentlyUsed,
            keys: u16::from(c.keys % 32) + 1,
            evicted: 0,
            void: false,
        })
    }

    fn check(&mut self, now: Instant, key: u16, n: u32) {
        let d = self.k.decide_n(now, &key, n);
        let full = Rejected {
            reason: KeyedLimited::TableFull,
            retry_at: None,
        };
        if d.result == Err(full) || d.by == DecidedBy::Overflow {
            assert_eq!(
                self.k.len(),
                self.k.capacity(),
                "{:?} answered for a table with room",
                self.full
            );
        }
        if let Err(e) = self.model.on_decision(now, &key, n, &d) {
            panic!("{e}");
        }
    }

    /// Keys the limiter forgot although the model says they are active were evicted.
    fn resync_evictions(&mut self, now: Instant) {
        let evicted = self.k.stats().evicted;
        let k = &self.k;
        let found = self.model.on_evictions(now, |key| k.remaining(now, key));
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
            Err(Rejected {
                reason: KeyedLimited::TableFull,
                ..
            }) => assert_eq!(self.full, Full::RejectNew),
            Err(Rejected {
                reason: KeyedLimited::OverRate,
                retry_at: Some(retry_at),
            }) if n == 1 => {
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
                Op::Check(key) => {
                    let _ = self.k.try_acquire(now, &u16::from(key));
                }
                Op::CheckN(key, n) => {
                    let _ = self.k.try_acquire_n(now, &u16::from(key), u32::from(n));
                }
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
                let full = self.k.len() == self.k.capacity();
                if let Err(e) = self.model.on_peek(now, &key, peek, rem, full) {
                    panic!("{e}");
                }
            }
            Op::SetQuota(q) => {
                let Some(quota) = q.quota() else {
                    clock.unseen();
                    return;
                };
                self.k.set_quota(now, quota);
                let k = &self.k;
                self.model
                    .set_quota(now, &quota, |key| k.remaining(now, key));
                self.quota = quota;
                self.watch_end(clock.newest);
                if self.void {
                    return;
                }
            }
        }
        self.resync_evictions(now);
        assert!(self.k.len() <= self.k.capacity(), "more keys than max_keys");
        assert_eq!(self.k.memory_bytes(), self.memory, "memory changed");
        if !self.evict {
            assert!(
                self.model.active(now) <= self.k.len(),
                "an active key was forgotten"
            );
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
