//! The keyed GCRA ([`keel_core::rate::keyed::KeyedGcra`]) as its docs define it.
//!
//! - **Every key is its own GCRA** ([`GcraModel`]): a key the table holds decides exactly as a
//!   limiter of its own would, made fresh at the key's first request; a key the machine forgot
//!   while idle (a full burst left) is the same as a fresh one, so forgetting changes nothing.
//! - **A full table** follows the policy, for a *new or idle* key only (an active key is never
//!   refused for room): [`Full::RejectNew`] answers [`KeyedLimited::TableFull`] with
//!   `retry_at: None`; [`Full::Overflow`] decides by one shared overflow limiter, itself a
//!   [`GcraModel`] at the overflow quota; [`Full::EvictLeastRecentlyUsed`] forgets some active
//!   key, which then starts fresh ([`on_evictions`](KeyedModel::on_evictions) finds which, from
//!   the machine's answers, and counts them).
//! - **A quota change** switches every key (and the overflow limiter, while its quota follows
//!   the per-key one: a config that set no overflow quota, or set it equal to the per-key one,
//!   which the model cannot tell apart) as [`GcraModel::set_quota`] does; an idle key the
//!   machine had already forgotten starts fresh under the new quota.
//!
//! Which keys the machine still holds (it reclaims idle keys lazily) is the machine's business:
//! the model accepts either answer where forgetting an idle key is allowed to make a difference
//! (which limiter decides a new key in a full table) and checks the decision itself.
//!
//! ```
//! use std::num::NonZeroU32;
//! use keel_core::rate::keyed::{Full, KeyedConfig, KeyedGcra};
//! use keel_core::rate::Quota;
//! use keel_core::time::Instant;
//! use keel_testkit::models::keyed::KeyedModel;
//!
//! let config = KeyedConfig::builder()
//!     .quota(Quota::per_second(NonZeroU32::MIN)?)
//!     .max_keys(1)
//!     .full(Full::RejectNew)
//!     .hash_seed(7)
//!     .build()?;
//! let (mut keyed, mut model) = (KeyedGcra::new(config, Instant::ZERO), KeyedModel::new(&config, Instant::ZERO));
//! for key in [1u32, 1, 2] {
//!     let decision = keyed.decide_n(Instant::ZERO, &key, 1);
//!     model.on_decision(Instant::ZERO, &key, 1, &decision).expect("as documented");
//! }
//! # Ok::<(), keel_core::ConfigError>(())
//! ```

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use keel_core::rate::keyed::{DecidedBy, Full, KeyedConfig, KeyedDecision, KeyedLimited};
use keel_core::rate::Quota;
use keel_core::time::Instant;
use keel_core::Rejected;

use super::gcra::GcraModel;

/// The reference model of a keyed GCRA limiter. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct KeyedModel<K> {
    quota: Quota,
    full: Full,
    keys: HashMap<K, GcraModel>,
    overflow: GcraModel,
    overflow_follows: bool,
}

fn keyed(
    r: Result<(), Rejected<keel_core::rate::RateLimited>>,
) -> Result<(), Rejected<KeyedLimited>> {
    r.map_err(|e| Rejected {
        reason: KeyedLimited::from(e.reason),
        retry_at: e.retry_at,
    })
}

impl<K: Hash + Eq + Clone + Debug> KeyedModel<K> {
    /// The model of a fresh table made from `config` at `now` (the overflow quota follows the
    /// per-key one unless the config sets its own).
    #[must_use]
    pub fn new(config: &KeyedConfig, now: Instant) -> KeyedModel<K> {
        KeyedModel {
            quota: config.quota(),
            full: config.full(),
            keys: HashMap::new(),
            overflow: GcraModel::new(&config.overflow_quota(), now),
            overflow_follows: config.overflow_quota() == config.quota(),
        }
    }

    /// The per-key quota in force.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// The model of `key`'s own limiter, if the key was ever admitted.
    #[must_use]
    pub fn key(&self, key: &K) -> Option<&GcraModel> {
        self.keys.get(key)
    }

    /// The overflow limiter's model.
    #[must_use]
    pub fn overflow(&self) -> &GcraModel {
        &self.overflow
    }

    /// Does `key` have its full burst at `now` (never seen, or idle: forgettable)? A void key
    /// model answers `false`.
    #[must_use]
    pub fn is_idle(&self, now: Instant, key: &K) -> bool {
        self.keys
            .get(key)
            .is_none_or(|m| m.remaining(now) == Some(m.burst()))
    }

    /// Keys with debt at `now` (the table must hold every one of them, except under
    /// [`Full::EvictLeastRecentlyUsed`]).
    #[must_use]
    pub fn active(&self, now: Instant) -> usize {
        self.keys.keys().filter(|k| !self.is_idle(now, k)).count()
    }

    /// `key`'s own limiter's answer to `n` requests at `now` (a fresh limiter for a key never
    /// seen), or `None` when that model is void.
    #[must_use]
    pub fn decide_n(
        &self,
        now: Instant,
        key: &K,
        n: u32,
    ) -> Option<Result<(), Rejected<KeyedLimited>>> {
        match self.keys.get(key) {
            Some(m) => m.decide_n(now, n).map(keyed),
            None => GcraModel::new(&self.quota, now).decide_n(now, n).map(keyed),
        }
    }

    /// Checks the machine's decision on `n` requests for `key` at `now` and records it.
    ///
    /// # Errors
    ///
    /// What the machine did that its docs forbid: a `TableFull` or an overflow decision under
    /// another policy or for an active key, or an answer other than the deciding limiter's.
    pub fn on_decision(
        &mut self,
        now: Instant,
        key: &K,
        n: u32,
        decision: &KeyedDecision,
    ) -> Result<(), String> {
        let idle = self.is_idle(now, key);
        let full_table = Rejected {
            reason: KeyedLimited::TableFull,
            retry_at: None,
        };
        if decision.result == Err(full_table) {
            if self.full != Full::RejectNew {
                return Err(format!("TableFull for {key:?} under {:?}", self.full));
            }
            if !idle {
                return Err(format!(
                    "TableFull for {key:?}, an active key the table holds"
                ));
            }
            return Ok(());
        }
        if decision.by == DecidedBy::Overflow {
            if self.full != Full::Overflow {
                return Err(format!(
                    "the overflow limiter decided {key:?} under {:?}",
                    self.full
                ));
            }
            if !idle {
                return Err(format!(
                    "the overflow limiter decided {key:?}, an active key"
                ));
            }
            if let Some(want) = self.overflow.decide_n(now, n).map(keyed) {
                if want != decision.result {
                    return Err(format!(
                        "overflow: {n} for {key:?} at {now:?}: {:?}, the model says {want:?}",
                        decision.result
                    ));
                }
            }
            return self.overflow.on_decision(now, n, decision.result.is_ok());
        }
        if let Some(want) = self.decide_n(now, key, n) {
            if want != decision.result {
                return Err(format!(
                    "{n} for {key:?} at {now:?}: {:?}, the model says {want:?}",
                    decision.result
                ));
            }
        }
        let quota = self.quota;
        self.keys
            .entry(key.clone())
            .or_insert_with(|| GcraModel::new(&quota, now))
            .on_decision(now, n, decision.result.is_ok())
    }

    /// Checks the machine's `peek(now, key)` and `remaining(now, key)`; `table_full` is whether
    /// the machine's table holds `max_keys` keys (a key outside a full table may be answered by
    /// the policy).
    ///
    /// # Errors
    ///
    /// The answer that differs from the key's own limiter's.
    pub fn on_peek(
        &self,
        now: Instant,
        key: &K,
        peek: Result<(), Rejected<KeyedLimited>>,
        remaining: u32,
        table_full: bool,
    ) -> Result<(), String> {
        let own = self.keys.get(key);
        let want_remaining = match own {
            Some(m) => m.remaining(now),
            None => Some(self.quota.burst().get()),
        };
        if want_remaining.is_some_and(|w| w != remaining) {
            return Err(format!(
                "remaining({key:?}) = {remaining}, the model says {want_remaining:?}"
            ));
        }
        let idle = self.is_idle(now, key);
        if idle && table_full && self.full != Full::EvictLeastRecentlyUsed {
            // The policy may answer for a key outside a full table.
            return Ok(());
        }
        let want = self.decide_n(now, key, 1);
        if want.is_some_and(|w| w != peek) {
            return Err(format!("peek({key:?}) = {peek:?}, the model says {want:?}"));
        }
        Ok(())
    }

    /// Finds the keys the machine forgot while active (evicted: `machine_remaining` gives them a
    /// full burst while the model owes them debt), makes them fresh at `now` and returns how
    /// many.
    pub fn on_evictions(&mut self, now: Instant, machine_remaining: impl Fn(&K) -> u32) -> u64 {
        let burst = self.quota.burst().get();
        let mut evicted = 0;
        for (key, m) in &mut self.keys {
            let active = m.remaining(now).is_some_and(|r| r < burst);
            if active && machine_remaining(key) == burst {
                *m = GcraModel::new(&self.quota, now);
                evicted += 1;
            }
        }
        evicted
    }

    /// Switches every key to `quota` at `now`, as the machine's `set_quota`.
    /// `machine_remaining` is the machine's `remaining` after its own switch: an idle key it
    /// answers with the new full burst had been forgotten and starts fresh.
    pub fn set_quota(
        &mut self,
        now: Instant,
        quota: &Quota,
        machine_remaining: impl Fn(&K) -> u32,
    ) {
        let idle: Vec<K> = self
            .keys
            .keys()
            .filter(|k| self.is_idle(now, k))
            .cloned()
            .collect();
        for (key, m) in &mut self.keys {
            if idle.contains(key) && machine_remaining(key) == quota.burst().get() {
                *m = GcraModel::new(quota, now);
            } else {
                m.set_quota(now, quota);
            }
        }
        if self.overflow_follows {
            self.overflow.set_quota(now, quota);
        }
        self.quota = *quota;
    }
}
