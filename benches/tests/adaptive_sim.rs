//! The "done when" figures for keel's default adaptive controller, checked in the
//! simulator (one run, seed 1, every scenario, beside the re-implemented anchors).
//!
//! Each figure names the scenario and column of `adaptive-sim`'s table it reads.

use keel_benches::adaptive_sim::{run_all, table, Algo, RunResult};

fn get<'a>(results: &'a [RunResult], algo: Algo, scenario: &str) -> &'a RunResult {
    results
        .iter()
        .find(|r| r.algo == algo && r.scenario == scenario)
        .unwrap_or_else(|| panic!("no run of {} on {scenario}", algo.name()))
}

#[test]
fn keel_default_meets_the_done_when_figures() {
    let algos = [
        Algo::KeelGradient,
        Algo::NetflixVegas,
        Algo::NetflixGradient2,
        Algo::NetflixAimd,
        Algo::EnvoyGradient,
    ];
    let results = run_all(&algos, 1);
    let t = table(&results);
    let keel = |s: &str| get(&results, Algo::KeelGradient, s);

    // From a cold start at limit 1: within 10 % of the ideal limit in at most 30 windows.
    let cold = keel("cold-start");
    assert!(cold.to_ideal.is_some_and(|w| w <= 30), "cold start\n{t}");

    // After a 3x overload ends: back to >= 90 % of what can be served within 10 windows,
    // never sitting at the minimum.
    let ends = keel("overload-ends");
    assert!(ends.recovery.is_some_and(|w| w <= 10), "recovery\n{t}");
    assert!(!ends.stuck_at_min, "stuck at min\n{t}");

    // Under 3x load: goodput >= 95 %, p99 <= 2x the minimum RTT, and no creep (the limit's
    // late mean within 5 % of its early mean, and within 10 % of the ideal).
    let over = keel("overload-3x");
    assert!(over.goodput_pct >= 95.0, "goodput\n{t}");
    assert!(over.p99_ratio <= 2.0, "p99\n{t}");
    assert!((0.95..=1.05).contains(&over.creep), "creep\n{t}");
    assert!(over.limit_over_ideal <= 1.10, "limit over ideal\n{t}");

    // Under +-25 % latency noise at steady load: the limit moves by at most 10 %.
    let noise = keel("noise-25%");
    assert!(noise.spread <= 0.10, "spread under noise\n{t}");

    // Never stuck at the minimum in any scenario.
    for r in results.iter().filter(|r| r.algo == Algo::KeelGradient) {
        assert!(!r.stuck_at_min, "{} stuck at min\n{t}", r.scenario);
    }

    // Beats each anchor where it is known to fail.
    // Vegas: over-reaction to noise (its minimum RTT is the luckiest single request).
    let vegas = get(&results, Algo::NetflixVegas, "noise-25%");
    assert!(
        noise.goodput_pct > vegas.goodput_pct + 10.0,
        "vs Vegas\n{t}"
    );
    // Gradient2: creeps up under overload with a queue (to its maximum here).
    let g2 = get(&results, Algo::NetflixGradient2, "overload-3x");
    assert!(
        over.limit_over_ideal * 2.0 < g2.limit_over_ideal,
        "vs Gradient2\n{t}"
    );
    assert!(over.p99_ratio * 2.0 < g2.p99_ratio, "vs Gradient2 p99\n{t}");
    // AIMD: blind to latency, it never settles near the ideal limit from a cold start.
    let aimd = get(&results, Algo::NetflixAimd, "cold-start");
    assert!(
        aimd.to_ideal
            .is_none_or(|w| cold.to_ideal.is_some_and(|k| k < w)),
        "vs AIMD\n{t}"
    );
    assert!(cold.p99_ratio * 2.0 < aimd.p99_ratio, "vs AIMD p99\n{t}");
    // Envoy: under noise, its buffer keeps a bigger limit and queue than needed.
    let envoy = get(&results, Algo::EnvoyGradient, "noise-25%");
    assert!(
        noise.goodput_pct >= envoy.goodput_pct,
        "vs Envoy goodput\n{t}"
    );
    assert!(noise.p99_ratio < envoy.p99_ratio, "vs Envoy p99\n{t}");

    // No worse than 5 % behind the best anchor's goodput on any scenario.
    for r in results.iter().filter(|r| r.algo == Algo::KeelGradient) {
        let best = results
            .iter()
            .filter(|a| a.scenario == r.scenario && Algo::ANCHORS.contains(&a.algo))
            .map(|a| a.goodput_pct)
            .fold(0.0, f64::max);
        assert!(
            r.goodput_pct >= 0.95 * best,
            "{} behind the best anchor\n{t}",
            r.scenario
        );
    }
}

#[test]
fn the_simulation_is_deterministic() {
    let scenario = &keel_benches::adaptive_sim::Scenario::all()[0];
    let a = keel_benches::adaptive_sim::run(Algo::KeelGradient, scenario, 7);
    let b = keel_benches::adaptive_sim::run(Algo::KeelGradient, scenario, 7);
    assert_eq!(a, b);
}

#[test]
fn with_priorities_at_3x_critical_work_succeeds_and_sheddable_work_absorbs_the_shedding() {
    use keel_benches::adaptive_sim::{priority_table, run_priorities};
    use keel_core::bulkhead::Criticality;

    let with = run_priorities(1, true);
    let without = run_priorities(1, false);
    let t = priority_table(&[with.clone(), without.clone()]);
    let (critical, default, sheddable) = (
        with.class(Criticality::Critical),
        with.class(Criticality::Default),
        with.class(Criticality::Sheddable),
    );
    // The figure: critical requests succeed >= 99 %.
    assert!(critical.success_pct() >= 99.0, "critical\n{t}");
    // Sheddable work absorbs the shedding: it is shed most, default less, critical least.
    assert!(
        sheddable.shed_pct() > default.shed_pct(),
        "sheddable vs default\n{t}"
    );
    assert!(
        default.shed_pct() > critical.shed_pct(),
        "default vs critical\n{t}"
    );
    assert!(
        sheddable.success_pct() < default.success_pct(),
        "success order\n{t}"
    );
    // And the service stays busy: classes cost no goodput.
    assert!(with.goodput_pct >= 95.0, "goodput\n{t}");
    assert!(
        with.goodput_pct >= without.goodput_pct - 2.0,
        "goodput vs baseline\n{t}"
    );
    // Without classes the shedding falls on critical work too (what the classes buy).
    assert!(
        without.class(Criticality::Critical).success_pct() < 90.0,
        "baseline\n{t}"
    );
}
