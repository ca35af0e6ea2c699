//! The GCRA decision, written once and shared by the `&mut` limiter, the atomic
//! [`SharedRateLimiter`](crate::sync::gcra::SharedRateLimiter) and the keyed limiter.
//!
//! All values are nanoseconds on the caller's clock. `t` is the emission interval (> 0), `tau`
//! the tolerance `(burst - 1) * t`. The state is the theoretical arrival time (TAT); a TAT at or
//! before `now` is the state of a fresh limiter.

/// The largest TAT ever stored. `u64::MAX` itself is never a TAT, so the shared form can use
/// it as its "quota change in progress" marker.
pub(crate) const TAT_MAX: u64 = u64::MAX - 1;

/// The default largest clock step taken at face value: 60 s (see `crate::rate`, "Clock faults").
pub(crate) const DEFAULT_MAX_CLOCK_JUMP: u64 = 60_000_000_000;

/// Does the state prove a clock fault at `now`?
///
/// After any decision at `now` the TAT is at most `now + burst × T = now + tau + t`. A TAT
/// beyond `now + tau + t + jump` therefore proves that an earlier `now` was more than `jump`
/// after this one: the clock jumped forward and came back (or this `now` is far behind). It is
/// exactly "one request would have to wait more than `t + jump`": on the hot paths it is tested
/// on the rejection branch only, where the wait is already known.
#[inline]
pub(crate) fn clock_fault(tat: u64, now: u64, t: u64, tau: u64, jump: u64) -> bool {
    tat.saturating_sub(tau) > now.saturating_add(t).saturating_add(jump)
}

/// [`clock_fault`] on a rejection's `allow_at` (= `tat - tau`), as the hot paths have it.
#[inline(always)]
pub(crate) fn fault_at(allow_at: u64, now: u64, t: u64, jump: u64) -> bool {
    allow_at > now.saturating_add(t).saturating_add(jump)
}

/// The TAT to decide with at `now`: `tat`, or `now` (a fresh limiter) after a clock fault.
#[inline]
pub(crate) fn resync(tat: u64, now: u64, t: u64, tau: u64, jump: u64) -> u64 {
    if clock_fault(tat, now, t, tau, jump) {
        now.min(TAT_MAX)
    } else {
        tat
    }
}

/// One request: `Ok(new_tat)` if it conforms at `now`, else `Err(earliest instant)`.
#[inline(always)]
pub(crate) fn conform(tat: u64, now: u64, t: u64, tau: u64) -> Result<u64, u64> {
    conform_unsaturated(tat, now, t, tau).unwrap_or(Ok(TAT_MAX))
}

/// [`conform`] for every TAT short of the end of the clock: `None` exactly where `conform`
/// admits with a new TAT saturated at [`TAT_MAX`] (584 years after the epoch).
///
/// This is the hot paths' form. Its branches are predictable in steady state (a busy limiter
/// has `tat > now` check after check, an idle one `tat <= now`), and a caller that sends
/// `None` to an out-of-line fallback gets the new TAT as one add with no conditional moves
/// behind it: the shared limiter's CAS (and the `&mut` limiter's store) waits for that value,
/// and the saturating chain of conditional moves measured 0.3-0.5 ns slower per check.
#[inline(always)]
pub(crate) fn conform_unsaturated(
    tat: u64,
    now: u64,
    t: u64,
    tau: u64,
) -> Option<Result<u64, u64>> {
    let base = if tat > now {
        // A TAT at or before `now` always conforms (`tat - tau <= tat <= now`).
        let allow_at = tat.saturating_sub(tau);
        if allow_at > now {
            return Some(Err(allow_at));
        }
        tat
    } else {
        now
    };
    match base.overflowing_add(t) {
        (next, false) if next <= TAT_MAX => Some(Ok(next)),
        _ => None,
    }
}

/// `n` requests at once (`1 <= n <= burst`): all admitted or none.
#[inline]
pub(crate) fn conform_n(tat: u64, now: u64, t: u64, tau: u64, n: u32) -> Result<u64, u64> {
    let weight = t.saturating_mul(u64::from(n.saturating_sub(1)));
    // `tat + weight - tau`, without the intermediate sum: it overflows for a batch near a
    // burst whose `burst × T` is near `u64::MAX` ns, and saturating there put `allow_at` at
    // `u64::MAX - tau`, long before the batch conforms (the batch was admitted too early).
    let allow_at = if weight <= tau {
        tat.saturating_sub(tau - weight)
    } else {
        tat.saturating_add(weight - tau)
    };
    if allow_at > now {
        Err(allow_at)
    } else {
        let base = tat.max(now);
        Ok(min(base.saturating_add(weight).saturating_add(t), TAT_MAX))
    }
}

/// How many single requests would conform at `now` (between 0 and `burst`).
#[inline]
pub(crate) fn remaining(tat: u64, now: u64, t: u64, tau: u64, burst: u32) -> u32 {
    let base = tat.max(now);
    let horizon = now.saturating_add(tau);
    if base > horizon {
        return 0;
    }
    let fit = (horizon - base) / t;
    let fit = u32::try_from(fit).unwrap_or(u32::MAX).saturating_add(1);
    fit.min(burst)
}

/// The TAT after switching quota `(t_old, burst_old)` to `(t_new, burst_new)` at `now`.
///
/// The capacity left at `now` is carried over, measured in requests (fractional): with `d` the
/// debt `tat - now`, the old quota has `burst_old - d / t_old` requests available; the new state
/// keeps `min(that, burst_new)` available, rounding the new debt up to the nanosecond. The TAT
/// can move backwards (a faster rate makes the same used requests cost less time).
///
/// A debt beyond the old `burst × T` (a `now` older than the state's, or the shared form's
/// conservative carry-over) counts as a drained limiter at the state's own instant
/// `tat - burst × T`, not as extra requests owed: a stale `now` must not turn into a debt the
/// new quota could read as a clock fault (a slower new rate would multiply it).
pub(crate) fn requota(
    tat: u64,
    now: u64,
    t_old: u64,
    burst_old: u32,
    t_new: u64,
    burst_new: u32,
) -> u64 {
    let now = now.max(tat.saturating_sub(t_old.max(1).saturating_mul(u64::from(burst_old))));
    let t_old128 = u128::from(t_old.max(1));
    let t_new128 = u128::from(t_new);
    let debt = u128::from(tat.saturating_sub(now));
    // (burst_new - available_old) * t_old, where available_old = burst_old - debt / t_old.
    let x =
        (u128::from(burst_new) * t_old128 + debt).saturating_sub(u128::from(burst_old) * t_old128);
    let q = x / t_old128;
    let r = x % t_old128;
    let new_debt = q * t_new128 + (r * t_new128).div_ceil(t_old128);
    let new_debt = u64::try_from(new_debt).unwrap_or(u64::MAX);
    min(now.saturating_add(new_debt), TAT_MAX)
}

#[inline(always)]
fn min(a: u64, b: u64) -> u64 {
    if a < b {
        a
    } else {
        b
    }
}
