//! ManualRuntime: the clock moves only when told, timers fire when it reaches them (or as the
//! options say), block_on jumps to the next timer, spawned tasks run, abort and signals work.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use keel_core::driver::{
    self, AbortHandle as _, Runtime as _, Signals as _, Spawn as _, Timer as _,
};
use keel_core::time::Instant;
use keel_testkit::ManualRuntime;

#[derive(Default)]
struct CountWakes(AtomicUsize);
impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountWakes>, Waker) {
    let wakes = Arc::new(CountWakes::default());
    let waker = Waker::from(Arc::clone(&wakes));
    (wakes, waker)
}

#[test]
fn the_clock_moves_only_when_advanced_and_never_backwards() {
    let rt = ManualRuntime::starting_at(Instant::from_secs(5));
    assert_eq!(rt.now(), Instant::from_secs(5));
    assert_eq!(driver::Runtime::now(&rt), Instant::from_secs(5));
    rt.advance(Duration::from_millis(1500));
    assert_eq!(rt.now(), Instant::from_millis(6500));
    rt.advance_to(Instant::from_secs(1));
    assert_eq!(rt.now(), Instant::from_millis(6500), "went back");
    rt.advance(Duration::MAX);
    assert_eq!(rt.now(), Instant::from_nanos(u64::MAX), "saturates");
    let clone = rt.clone();
    assert_eq!(clone.now(), rt.now(), "clones share the clock");
}

#[test]
fn a_timer_fires_when_the_clock_reaches_its_deadline_and_wakes_its_task_once() {
    let rt = ManualRuntime::new();
    let mut timer = rt.timer(Instant::from_secs(10));
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(timer.poll_elapsed(&mut cx).is_pending());
    assert_eq!(rt.next_timer(), Some(Instant::from_secs(10)));
    assert_eq!(rt.armed_timers(), 1);
    rt.advance(Duration::from_nanos(9_999_999_999));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    assert!(timer.poll_elapsed(&mut cx).is_pending());
    rt.advance(Duration::from_nanos(1));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(rt.armed_timers(), 0);
    assert!(timer.poll_elapsed(&mut cx).is_ready());
    rt.advance(Duration::from_secs(1));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "woken once");
}

#[test]
fn a_reset_or_dropped_timer_leaves_no_stale_entry() {
    let rt = ManualRuntime::new();
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut timer = rt.timer(Instant::from_secs(1));
    assert!(timer.poll_elapsed(&mut cx).is_pending());
    timer.reset(Instant::from_secs(3));
    assert_eq!(
        rt.armed_timers(),
        0,
        "reset unregisters until the next poll"
    );
    assert!(timer.poll_elapsed(&mut cx).is_pending());
    assert_eq!(rt.next_timer(), Some(Instant::from_secs(3)));
    rt.advance_to(Instant::from_secs(2));
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        0,
        "the old deadline does not fire"
    );
    drop(timer);
    assert_eq!(rt.armed_timers(), 0);
    assert_eq!(rt.next_timer(), None);
}

#[test]
fn granularity_and_lateness_delay_when_timers_fire_but_not_the_clock() {
    let rt = ManualRuntime::new()
        .with_timer_granularity(Duration::from_millis(1))
        .with_timer_lateness(Duration::from_micros(300));
    let mut timer = rt.timer(Instant::from_nanos(1_000_001));
    let (_, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(timer.poll_elapsed(&mut cx).is_pending());
    assert_eq!(rt.next_timer(), Some(Instant::from_nanos(2_300_000)));
    rt.advance_to(Instant::from_nanos(2_299_999));
    assert!(timer.poll_elapsed(&mut cx).is_pending());
    rt.advance_to(Instant::from_nanos(2_300_000));
    assert!(timer.poll_elapsed(&mut cx).is_ready());
}

#[test]
fn early_timers_fire_at_once_whatever_their_deadline() {
    let rt = ManualRuntime::new().with_early_timers();
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut timer = rt.timer(Instant::from_secs(100));
    assert!(timer.poll_elapsed(&mut cx).is_ready());
    timer.reset(Instant::from_nanos(u64::MAX));
    assert!(timer.poll_elapsed(&mut cx).is_ready());
    assert_eq!((rt.armed_timers(), rt.now()), (0, Instant::ZERO));
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
}

#[test]
fn block_on_jumps_the_clock_to_each_timer_in_turn() {
    let rt = ManualRuntime::new();
    let seen = rt.block_on(async {
        let mut seen = Vec::new();
        for secs in [3u64, 1, 3600] {
            driver::sleep(&rt, Duration::from_secs(secs)).await;
            seen.push(rt.now().as_duration().as_secs());
        }
        seen
    });
    assert_eq!(seen, [3, 4, 3604]);
}

#[test]
fn a_timeout_fires_on_the_manual_clock() {
    let rt = ManualRuntime::new();
    let out = rt.block_on(driver::timeout(
        &rt,
        Duration::from_secs(5),
        std::future::pending::<()>(),
    ));
    let err = out.expect_err("the pending future never finishes");
    assert_eq!(err.deadline, Instant::from_secs(5));
    assert_eq!(rt.now(), Instant::from_secs(5));
}

#[test]
fn spawned_tasks_run_in_wake_order_beside_block_on() {
    let rt = ManualRuntime::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    for (name, secs) in [("b", 2u64), ("a", 1), ("c", 3)] {
        let (rt2, order) = (rt.clone(), Arc::clone(&order));
        drop(rt.spawn(async move {
            driver::sleep(&rt2, Duration::from_secs(secs)).await;
            order
                .lock()
                .unwrap()
                .push((name, rt2.now().as_duration().as_secs()));
        }));
    }
    assert_eq!(rt.tasks(), 3);
    rt.block_on(driver::sleep(&rt, Duration::from_secs(10)));
    assert_eq!(*order.lock().unwrap(), [("a", 1), ("b", 2), ("c", 3)]);
    assert_eq!(rt.tasks(), 0);
}

#[test]
fn run_until_idle_polls_ready_tasks_without_moving_the_clock() {
    let rt = ManualRuntime::new();
    let done = Arc::new(AtomicBool::new(false));
    let (rt2, flag) = (rt.clone(), Arc::clone(&done));
    let _detached = rt.spawn(async move {
        driver::sleep(&rt2, Duration::from_secs(1)).await;
        flag.store(true, Ordering::SeqCst);
    });
    assert_eq!(rt.run_until_idle(), 1);
    assert_eq!(
        rt.run_until_idle(),
        0,
        "nothing is ready until the clock moves"
    );
    assert_eq!(rt.now(), Instant::ZERO);
    assert!(!done.load(Ordering::SeqCst));
    rt.advance(Duration::from_secs(1));
    assert_eq!(rt.run_until_idle(), 1);
    assert!(done.load(Ordering::SeqCst));
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn abort_drops_the_task_and_a_dropped_handle_detaches_it() {
    let rt = ManualRuntime::new();
    let (aborted, detached) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let guard = DropFlag(Arc::clone(&aborted));
    let handle = rt.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    let guard = DropFlag(Arc::clone(&detached));
    drop(rt.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    }));
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 2);
    handle.abort();
    assert!(aborted.load(Ordering::SeqCst), "aborting drops the future");
    assert!(
        !detached.load(Ordering::SeqCst),
        "dropping the handle does not"
    );
    assert_eq!(rt.tasks(), 1);
}

#[test]
fn a_shutdown_signal_resolves_the_signal_futures_created_before_it() {
    let rt = ManualRuntime::new();
    let mut first = rt.shutdown_signal();
    let (wakes, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(first.as_mut().poll(&mut cx).is_pending());
    assert!(first.as_mut().poll(&mut cx).is_pending());
    rt.send_shutdown_signal();
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        1,
        "one waker kept, woken once"
    );
    let mut later = rt.shutdown_signal();
    assert!(first.as_mut().poll(&mut cx).is_ready());
    assert!(
        later.as_mut().poll(&mut cx).is_pending(),
        "waits for the next signal"
    );
    rt.send_shutdown_signal();
    assert!(later.as_mut().poll(&mut cx).is_ready());
}

#[test]
#[should_panic(expected = "nothing can ever wake it")]
fn block_on_panics_instead_of_hanging_when_nothing_can_wake_the_future() {
    let rt = ManualRuntime::new();
    rt.block_on(rt.shutdown_signal());
}

#[test]
fn a_joinable_task_hands_its_output_to_whoever_awaits_it() {
    let rt = ManualRuntime::new();
    let (rt2, rt3) = (rt.clone(), rt.clone());
    let slow = rt.spawn_joinable(async move {
        driver::sleep(&rt2, Duration::from_secs(2)).await;
        rt2.now()
    });
    let fast = rt.spawn_joinable(async move { rt3.now() });
    let (a, b) = rt.block_on(async { (slow.await, fast.await) });
    assert_eq!((a, b), (Instant::from_secs(2), Instant::ZERO));
    assert_eq!(rt.tasks(), 0);
}
