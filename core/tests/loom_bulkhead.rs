//! loom models of the shared bulkhead: in-flight never exceeds the limit, and a released slot
//! always wakes a queued waiter (no lost wake-up).
//!
//! `RUSTFLAGS="--cfg keel_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p keel-core --features std --test loom_bulkhead`
#![cfg(keel_loom)]

use core::future::poll_fn;
use core::time::Duration;

use keel_core::bulkhead::BulkheadConfig;
use keel_core::sync::bulkhead::{Acquire, SharedBulkhead};
use keel_core::Instant;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;

#[path = "support/loom_block_on.rs"]
mod loom_block_on;
use loom_block_on::block_on;

fn config(max_concurrent: usize, max_queue: usize) -> BulkheadConfig {
    let mut b = BulkheadConfig::builder()
        .max_concurrent(max_concurrent)
        .max_queue(max_queue);
    if max_queue > 0 {
        b = b.max_wait(Duration::from_secs(60));
    }
    b.build().unwrap()
}

#[test]
fn loom_in_flight_never_exceeds_max_concurrent() {
    loom::model(|| {
        let bh = SharedBulkhead::new(config(1, 0), Instant::ZERO);
        let running = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let bh = bh.clone();
                let running = running.clone();
                loom::thread::spawn(move || {
                    if let Ok(g) = bh.try_acquire(Instant::ZERO) {
                        let n = running.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(n, 0, "two holders at once");
                        running.fetch_sub(1, Ordering::SeqCst);
                        drop(g);
                    }
                })
            })
            .collect();
        if let Ok(g) = bh.try_acquire(Instant::ZERO) {
            assert_eq!(
                running.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            running.fetch_sub(1, Ordering::SeqCst);
            drop(g);
        }
        for t in threads {
            t.join().unwrap();
        }
        let s = bh.stats();
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.admitted + s.shed_full, 3);
        assert!(s.peak <= 1);
    });
}

#[test]
fn loom_a_released_slot_wakes_a_queued_waiter() {
    loom::model(|| {
        let bh = SharedBulkhead::new(config(1, 2), Instant::ZERO);
        let guard = bh.try_acquire(Instant::ZERO).unwrap();
        let releaser = loom::thread::spawn(move || drop(guard));
        // The waiter may queue before or after the release; either way it must get the slot.
        match bh.acquire(Instant::ZERO) {
            Acquire::Ready(r) => drop(r.unwrap()),
            Acquire::Wait(mut waiter) => {
                // block_on parks until woken: a lost wake-up is reported by loom as a deadlock.
                let g = block_on(poll_fn(|cx| waiter.poll(cx, Instant::ZERO)));
                drop(g.unwrap());
            }
        }
        releaser.join().unwrap();
        assert_eq!(bh.stats().in_flight, 0);
    });
}

#[test]
fn loom_two_waiters_both_get_the_slot_in_turn() {
    loom::model(|| {
        let bh = SharedBulkhead::new(config(1, 2), Instant::ZERO);
        let guard = bh.try_acquire(Instant::ZERO).unwrap();
        let waiter_thread = {
            let bh = bh.clone();
            loom::thread::spawn(move || match bh.acquire(Instant::ZERO) {
                Acquire::Ready(r) => drop(r.unwrap()),
                Acquire::Wait(mut w) => {
                    drop(block_on(poll_fn(|cx| w.poll(cx, Instant::ZERO))).unwrap())
                }
            })
        };
        let Acquire::Wait(mut mine) = bh.acquire(Instant::ZERO) else {
            panic!("the slot is held: must wait");
        };
        drop(guard);
        drop(block_on(poll_fn(|cx| mine.poll(cx, Instant::ZERO))).unwrap());
        waiter_thread.join().unwrap();
        let s = bh.stats();
        assert_eq!((s.in_flight, s.queue_len), (0, 0));
        assert_eq!(s.admitted, 3);
    });
}
