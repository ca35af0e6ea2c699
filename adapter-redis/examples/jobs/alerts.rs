//! The seed's monitoring signals as alert rules over the jobs example's metrics, and the small
//! evaluator `jobs-load` runs them with over its scrapes of every process's `/metrics`.
//! `examples/jobs/README.md` lists the same expressions (a test checks they agree).

use std::collections::HashMap;

/// One scrape of one process.
pub struct Scrape {
    /// Seconds since the load script started.
    pub t: f64,
    pub target: String,
    /// `name{labels}` → value, as in the exposition text.
    pub series: HashMap<String, f64>,
}

/// Parses Prometheus text.
pub fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A series selector: a metric name and label matchers (`=` and `!=`).
pub struct Sel {
    pub name: &'static str,
    pub eq: &'static [(&'static str, &'static str)],
    pub ne: &'static [(&'static str, &'static str)],
}

impl Sel {
    fn matches(&self, key: &str) -> bool {
        let (name, labels) = match key.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (key, ""),
        };
        if name != self.name {
            return false;
        }
        let has = |k: &str, v: &str| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\""));
        self.eq.iter().all(|(k, v)| has(k, v)) && !self.ne.iter().any(|(k, v)| has(k, v))
    }

    /// The sum of the matching series in one scrape.
    pub fn sum_of(&self, s: &Scrape) -> f64 {
        self.sum(s)
    }

    fn sum(&self, s: &Scrape) -> f64 {
        s.series
            .iter()
            .filter(|(k, _)| self.matches(k))
            .map(|(_, v)| v)
            .sum()
    }
}

/// The scrapes the script holds, in time order.
pub struct History {
    pub scrapes: Vec<Scrape>,
}

impl History {
    /// Per target, its latest scrape at or before `t`.
    fn latest(&self, t: f64) -> HashMap<&str, &Scrape> {
        let mut m = HashMap::new();
        for s in self.scrapes.iter().filter(|s| s.t <= t) {
            m.insert(s.target.as_str(), s);
        }
        m
    }

    /// `sum(sel)` at `t` over every target's latest scrape (a target gone for more than 2 s
    /// no longer counts: Prometheus marks its series stale).
    pub fn sum(&self, sel: &Sel, t: f64) -> f64 {
        self.latest(t)
            .values()
            .filter(|s| t - s.t <= 2.0)
            .map(|s| sel.sum(s))
            .sum()
    }

    /// The sum over every target (live or gone) of its last scraped value: a run's total.
    pub fn total(&self, sel: &Sel) -> f64 {
        self.latest(f64::INFINITY)
            .values()
            .map(|s| sel.sum(s))
            .sum::<f64>()
            .max(0.0)
            + 0.0
    }

    /// `sum(increase(sel[window]))` at `t`: per target, never negative (a restart resets).
    pub fn increase(&self, sel: &Sel, t: f64, window: f64) -> f64 {
        let now = self.latest(t);
        let then = self.latest(t - window);
        now.iter()
            .filter(|(_, s)| t - s.t <= 2.0)
            .map(|(target, s)| {
                let before = then.get(target).map_or(0.0, |p| sel.sum(p));
                (sel.sum(s) - before).max(0.0)
            })
            .sum::<f64>()
            .max(0.0)
            + 0.0
    }
}

/// An alert: fires while `value(history, t) > threshold`.
pub struct Rule {
    pub name: &'static str,
    /// The PromQL expression (as in the README).
    pub expr: &'static str,
    /// The seed's signal it watches.
    pub signal: &'static str,
    /// The load script's scenario that should fire it.
    pub scenario: &'static str,
    pub value: fn(&History, f64) -> f64,
    pub threshold: f64,
}

/// The window of the rate and increase expressions, seconds.
pub const WINDOW: f64 = 10.0;

const REJECTED_RATE: Sel = Sel {
    name: "jobs_enqueue_rejected_total",
    eq: &[("reason", "rate_limited")],
    ne: &[],
};
const QUEUE_LEN: Sel = Sel {
    name: "jobs_queue_length",
    eq: &[],
    ne: &[],
};
const ATTEMPTS: Sel = Sel {
    name: "jobs_attempts_total",
    eq: &[],
    ne: &[],
};
const ATTEMPTS_FAILED: Sel = Sel {
    name: "jobs_attempts_total",
    eq: &[],
    ne: &[("result", "ok")],
};
const LEAKS: Sel = Sel {
    name: "jobs_pool_leaks_total",
    eq: &[],
    ne: &[],
};
const REAPED: Sel = Sel {
    name: "jobs_reaped_total",
    eq: &[],
    ne: &[],
};

pub const RULES: [Rule; 5] = [
    Rule {
        name: "JobEnqueueFlood",
        expr: r#"sum(rate(jobs_enqueue_rejected_total{reason="rate_limited"}[10s])) > 5"#,
        signal: "job floods at enqueue (rate limiting per user)",
        scenario: "a flood",
        value: |h, t| h.increase(&REJECTED_RATE, t, WINDOW) / WINDOW,
        threshold: 5.0,
    },
    Rule {
        name: "JobQueueBacklog",
        expr: "sum(jobs_queue_length) > 200",
        signal: "queue length (a backlog the workers do not drain)",
        scenario: "b spike",
        value: |h, t| h.sum(&QUEUE_LEN, t),
        threshold: 200.0,
    },
    Rule {
        name: "JobFailureRate",
        expr: r#"sum(rate(jobs_attempts_total{result!="ok"}[10s])) / sum(rate(jobs_attempts_total[10s])) > 0.25"#,
        signal: "error rate (a slow or failing dependency)",
        scenario: "c dependency",
        value: |h, t| {
            let all = h.increase(&ATTEMPTS, t, WINDOW);
            if all <= 0.0 {
                0.0
            } else {
                h.increase(&ATTEMPTS_FAILED, t, WINDOW) / all
            }
        },
        threshold: 0.25,
    },
    Rule {
        name: "RedisConnectionLeak",
        expr: "sum(increase(jobs_pool_leaks_total[10s])) > 0",
        signal: "Redis connections not released promptly",
        scenario: "d leak",
        value: |h, t| h.increase(&LEAKS, t, WINDOW),
        threshold: 0.0,
    },
    Rule {
        name: "JobLeaseExpired",
        expr: "sum(increase(jobs_reaped_total[10s])) > 0",
        signal: "a worker died mid-job (its jobs come back after their lease)",
        scenario: "e kill",
        value: |h, t| h.increase(&REAPED, t, WINDOW),
        threshold: 0.0,
    },
];
