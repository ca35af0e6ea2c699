//! The load script's checks of seed 004's "Done when" that need more than a count: each
//! takes what the processes logged (their stdout job log, their stderr `config:` and `leak:`
//! lines) or what the script sampled from Redis, and returns the lines it prints and whether
//! the bound held. Shared by `jobs-load` and `tests/jobs.rs` (which feeds them made-up logs
//! to show each check fails when its bound is broken).

#![allow(dead_code)]

/// One sample of Redis's memory and of what the job system keeps in it.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemSample {
    pub t: f64,
    /// `INFO memory` `used_memory`.
    pub used: u64,
    /// `mem_clients_normal`: the clients' buffers (part of `used_memory`).
    pub clients: u64,
    /// Jobs in the two queues, in processing, waiting for a retry; final records; dead letters.
    pub queued: u64,
    pub processing: u64,
    pub delayed: u64,
    pub finals: u64,
    pub dead: u64,
}

/// `config: SECTION KEY=VALUE ...`, as a worker prints it on stderr at start.
pub fn config(err: &[String], section: &str, key: &str) -> Option<u64> {
    let head = format!("config: {section} ");
    let line = err.iter().find_map(|l| l.strip_prefix(head.as_str()))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The api's limits, as the load script passes them (the api's and workers' flags).
pub const BACKLOG_HIGH: u64 = 1000;
pub const BACKLOG_LOW: u64 = 800;
pub const CRITICAL_RESERVE: u64 = 300;
pub const USER_RATE: u64 = 10;
pub const USER_BURST: u64 = 20;
/// The longest `x-user` the api accepts.
pub const USER_MAX: u64 = 64;
/// The fleet-wide cap on running tasks, as passed to the workers.
pub const FLEET_CONCURRENCY: u64 = 6;

pub struct MemoryCheck {
    pub lines: Vec<String>,
    pub memory_ok: bool,
    pub queue_ok: bool,
    pub quota_ok: bool,
}

/// Redis's memory during `window` (the flood and the spike) against the bound the queue-depth
/// guard implies, and the flooding users against their quota.
///
/// The guard caps what waits in the queues: `high` jobs, plus `critical_reserve` critical ones.
/// A job is `ID|USER|PRIORITY|DEP|ENQUEUED_MS`: at most 20 + 64 + 8 + 1 + 13 bytes and 4
/// separators. What else a flood can add is bounded by the rest of the configuration (jobs
/// running: the fleet cap; their leases) or is not the queue's (the final record of each job
/// finished, the dead letters, the retries waiting in `delayed`, which the retry budget bounds):
/// those are counted from Redis at each sample and priced per entry. `used_memory` counts the
/// clients' buffers too (`mem_clients_normal`); they belong to the connections, not the queue,
/// so the check compares `used_memory - mem_clients_normal` (and prints both).
pub fn memory_check(
    samples: &[MemSample],
    baseline: (f64, f64),
    window: (f64, f64),
    flood_ok: &[u64],
    flood_secs: f64,
    new_users: u64,
) -> MemoryCheck {
    // Allowances per stored entry beyond its bytes: a list entry (listpack entry header, the
    // quicklist node's share, allocator rounding); a hash/zset entry (dict entry, two sds
    // headers, rounding); a key (dict entry, robj, sds, expiry entry).
    const LIST_ENTRY: u64 = 64;
    const HASH_ENTRY: u64 = 128;
    const KEY: u64 = 160;
    let job_max: u64 = 20 + USER_MAX + 8 + 1 + 13 + 4;
    let final_entry = 20 + 4 + HASH_ENTRY;
    // `ID|ATTEMPTS|REASON`: the longest reason is 45 bytes.
    let dead_entry = 20 + 1 + 3 + 1 + 45 + LIST_ENTRY;
    let delayed_entry = job_max + 8 + HASH_ENTRY;
    // A running job: its processing entry, its lease key (`PREFIX:lease:ID`, a token of < 64
    // bytes) and its attempts entry.
    let running = job_max + LIST_ENTRY + (64 + 64 + KEY) + (20 + 3 + HASH_ENTRY);
    let cap = BACKLOG_HIGH + CRITICAL_RESERVE;
    let queue_term = cap * (job_max + LIST_ENTRY);
    let running_term = FLEET_CONCURRENCY * running;
    // A fleet-limiter key per user new in the window (the normal users' exist since the
    // baseline); the limiter, not the guard, bounds these (they expire after the user's burst).
    let limiter_key = USER_MAX + 64 + KEY;
    let limiter_term = new_users * limiter_key;
    let base = samples
        .iter()
        .rfind(|m| m.t >= baseline.0 && m.t <= baseline.1)
        .copied()
        .unwrap_or_default();
    let base_data = base.used.saturating_sub(base.clients);
    let mut worst: Option<(MemSample, u64)> = None;
    let mut memory_ok = true;
    let mut queue_ok = true;
    let mut peak = MemSample::default();
    let mut n = 0;
    for m in samples
        .iter()
        .filter(|m| m.t >= window.0 && m.t <= window.1)
    {
        n += 1;
        let extra = m.finals.saturating_sub(base.finals) * final_entry
            + m.dead.saturating_sub(base.dead) * dead_entry
            + m.delayed * delayed_entry;
        let bound = base_data + queue_term + running_term + limiter_term + extra;
        let data = m.used.saturating_sub(m.clients);
        memory_ok &= data <= bound;
        queue_ok &= m.queued <= cap;
        if m.used >= peak.used {
            peak = *m;
        }
        let margin = bound.saturating_sub(data);
        if worst.is_none_or(|(_, w)| margin < w) {
            worst = Some((*m, bound));
        }
    }
    // No sample during the flood is no proof.
    memory_ok &= n > 0;
    let mut lines = Vec::new();
    lines.push(format!(
        "a+b: redis memory bound = baseline {base_data} B (used_memory {} - clients {} before the flood) + queues {cap} jobs (high {BACKLOG_HIGH} + critical reserve {CRITICAL_RESERVE}) x (largest job {job_max} B + {LIST_ENTRY} B per entry) = {queue_term} B + running {FLEET_CONCURRENCY} x {running} B = {running_term} B + limiter keys {new_users} new users x {limiter_key} B = {limiter_term} B + per sample: final records x {final_entry} B + dead letters x {dead_entry} B + waiting retries x {delayed_entry} B",
        base.used,
        base.clients,
    ));
    if let Some((m, bound)) = worst {
        let extra = bound - base_data - queue_term - running_term - limiter_term;
        lines.push(format!(
            "a+b: tightest sample at {:.1}s: used_memory {} B - clients {} B = {} B <= bound {} B ({} + {} + {} + {} + {extra} for {} new final records, {} new dead letters, {} waiting retries): {} ({n} samples in the flood and the spike, queues at most {} of {cap} jobs)",
            m.t,
            m.used,
            m.clients,
            m.used.saturating_sub(m.clients),
            bound,
            base_data,
            queue_term,
            running_term,
            limiter_term,
            m.finals.saturating_sub(base.finals),
            m.dead.saturating_sub(base.dead),
            m.delayed,
            if memory_ok { "within" } else { "OVER" },
            samples
                .iter()
                .filter(|m| m.t >= window.0 && m.t <= window.1)
                .map(|m| m.queued)
                .max()
                .unwrap_or(0),
        ));
    }
    lines.push(format!(
        "a+b: peak used_memory during the flood and the spike {} KiB ({} KiB over the baseline's {} KiB; the guard's queue term alone is {} KiB)",
        peak.used / 1024,
        peak.used.saturating_sub(base.used) / 1024,
        base.used / 1024,
        queue_term / 1024
    ));
    // GCRA: n admissions of one user need (n - burst) emission intervals, so over the flood's
    // length at most burst + rate x seconds.
    let quota = USER_BURST + (USER_RATE as f64 * flood_secs).floor() as u64;
    let got = flood_ok;
    let quota_ok = got.iter().all(|&g| g <= quota) && got.iter().any(|&g| g > 0);
    lines.push(format!(
        "a: flooding users' accepted enqueues {got:?}, each <= quota {USER_RATE}/s x {flood_secs:.1}s + burst {USER_BURST} = {quota}: {}",
        if quota_ok { "held" } else { "NOT held" }
    ));
    MemoryCheck {
        lines,
        memory_ok,
        queue_ok,
        quota_ok,
    }
}

pub struct BreakerCheck {
    pub line: String,
    pub ok: bool,
}

/// How many dependency calls failed in this worker between the dependency starting to fail
/// (`from_ms`) and its breaker opening, from its `dep failed NAME MS FAILURES OPENED` lines
/// (the breaker's own counters read right after each failure it recorded).
pub fn breaker_check(name: &str, out: &[String], err: &[String], from_ms: u64) -> BreakerCheck {
    let min_calls = config(err, "breaker", "minimum_calls").unwrap_or(0);
    let window = config(err, "breaker", "count_window").unwrap_or(0);
    let rate = config(err, "breaker", "failure_rate").unwrap_or(0);
    // With the failure-rate policy over a count window, `k` failures after any history open it
    // once the window holds `minimum_calls` calls and `k` reach `rate` % of them: at most
    // max(minimum_calls, ceil(rate % of the window)) failures.
    let bound = min_calls.max((window * rate).div_ceil(100));
    let mut before_failures = 0u64;
    let mut before_opened = 0u64;
    let mut failed_after = 0u64;
    let mut opened_at: Option<(u64, u64)> = None;
    let mut last_failures = 0u64;
    for l in out {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"dep") || f.get(1) != Some(&"failed") {
            continue;
        }
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (ms, failures, opened) = (num(3), num(4), num(5));
        if ms < from_ms {
            before_failures = before_failures.max(failures);
            before_opened = before_opened.max(opened);
            continue;
        }
        failed_after += 1;
        last_failures = last_failures.max(failures);
        if opened_at.is_none() && opened > before_opened {
            opened_at = Some((ms, failures));
        }
    }
    let (n, ok, what) = match opened_at {
        Some((ms, failures)) => {
            let n = failures.saturating_sub(before_failures);
            (
                n,
                n <= bound && bound > 0,
                format!(
                    "opened {} ms after the dependency started failing",
                    ms.saturating_sub(from_ms)
                ),
            )
        }
        None => {
            let n = last_failures.saturating_sub(before_failures);
            (n, n < bound, "did not open".to_string())
        }
    };
    BreakerCheck {
        line: format!(
            "c: {} breaker {what}: {n} failed calls before it opened (of {failed_after} failures logged in (c)) <= bound max(minimum_calls {min_calls}, ceil({rate} % of count window {window})) = {bound}: {}",
            name,
            if ok { "ok" } else { "FAIL" }
        ),
        ok,
    }
}

pub struct BudgetCheck {
    pub line: String,
    pub ok: bool,
}

/// The retry budget's guarantee (`keel_core::budget`), checked on one worker's log of its
/// deposits (first attempts) and withdrawals (retries), each with the instant the budget
/// recorded: for every window `[a, a + ttl)`,
/// `1000 x retries in it <= reserve + 10 x retry_percent x deposits in (a - (SLOTS + 1) x slot, a + ttl)`,
/// with `reserve = floor(min_per_sec x ttl x 1000)` milli-retries. Checked at every `a` where
/// the retries' side can grow or the deposits' side shrink: each retry, each deposit's
/// forgetting.
pub fn budget_check(name: &str, out: &[String], err: &[String]) -> BudgetCheck {
    let ttl = config(err, "budget", "ttl_ns").unwrap_or(0);
    let slot = config(err, "budget", "slot_ns").unwrap_or(0);
    let pct = config(err, "budget", "retry_percent").unwrap_or(0);
    let per_sec = config(err, "budget", "min_per_sec").unwrap_or(0);
    let floor = config(err, "budget", "floor").unwrap_or(0);
    let memory = 11 * slot;
    let reserve = (u128::from(per_sec) * u128::from(ttl) / 1_000_000) as u64;
    let mut deposits = Vec::new();
    let mut retries = Vec::new();
    for l in out {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"budget") {
            continue;
        }
        let Some(at) = f.get(3).and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        match f.get(1).copied() {
            Some("deposit") => deposits.push(at),
            Some("retry") => retries.push(at),
            _ => {}
        }
    }
    deposits.sort_unstable();
    retries.sort_unstable();
    let count = |v: &[u64], lo: u64, hi: u64| {
        // Elements in [lo, hi).
        v.partition_point(|&x| x < hi) - v.partition_point(|&x| x < lo)
    };
    let mut ok = ttl > 0 && slot > 0;
    // The tightest window: (start, retries, deposits, slack in milli-retries).
    let mut tightest: Option<(u64, u64, u64, i128)> = None;
    let starts = retries
        .iter()
        .copied()
        .chain(deposits.iter().map(|d| d.saturating_add(memory)));
    for a in starts {
        let w = count(&retries, a, a.saturating_add(ttl)) as u64;
        if w == 0 {
            continue;
        }
        // (a - memory, a + ttl): open on the left.
        let d = count(
            &deposits,
            a.saturating_sub(memory).saturating_add(1),
            a.saturating_add(ttl),
        ) as u64;
        let slack =
            i128::from(reserve) + 10 * i128::from(pct) * i128::from(d) - 1000 * i128::from(w);
        ok &= slack >= 0;
        if tightest.is_none_or(|t| slack < t.3) {
            tightest = Some((a, w, d, slack));
        }
    }
    let line = match tightest {
        Some((_, w, d, _)) => format!(
            "c: {} retries {} (first attempts {}); retry budget: in any {} s window retries <= floor {floor} ({per_sec}/s x {} s) + {pct} % of the first attempts in it and the {} s before; tightest window: {w} retries <= {floor} + {pct} % x {d} = {:.1}: {}",
            name,
            retries.len(),
            deposits.len(),
            ttl as f64 / 1e9,
            ttl as f64 / 1e9,
            memory as f64 / 1e9,
            reserve as f64 / 1000.0 + pct as f64 / 100.0 * d as f64,
            if ok { "within" } else { "OVER" }
        ),
        None => format!(
            "c: {} retries 0 (first attempts {}): within its retry budget trivially",
            name,
            deposits.len()
        ),
    };
    BudgetCheck { line, ok }
}

pub struct LeakCheck {
    pub line: String,
    pub ok: bool,
}

/// Every leak report's age against the threshold and the sweep interval the workers print.
pub fn leak_check(errs: &[&[String]]) -> LeakCheck {
    let mut n = 0u64;
    let mut ok = true;
    let mut min_age = u64::MAX;
    let mut max_age = 0u64;
    let (mut threshold, mut sweep) = (0, 0);
    for &err in errs {
        threshold = config(err, "leak", "threshold_ms").unwrap_or(threshold);
        sweep = config(err, "leak", "sweep_ms").unwrap_or(sweep);
        let t = config(err, "leak", "threshold_ms").unwrap_or(0);
        let sw = config(err, "leak", "sweep_ms").unwrap_or(0);
        for l in err.iter().filter(|l| l.starts_with("leak:")) {
            let Some(age) = l
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("age_ms="))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            n += 1;
            min_age = min_age.min(age);
            max_age = max_age.max(age);
            ok &= t > 0 && age >= t && age <= t + sw;
        }
    }
    ok &= n > 0;
    LeakCheck {
        line: format!(
            "d: {n} leaks reported, ages {}..{max_age} ms, each >= the threshold {threshold} ms and <= threshold + one sweep ({sweep} ms) = {} ms: {}",
            if n == 0 { 0 } else { min_age },
            threshold + sweep,
            if ok { "ok" } else { "FAIL" }
        ),
        ok,
    }
}
