//! The one list of wakers the shared forms keep: the tasks waiting on a [`SharedLimit`], and
//! the wakers a [`SharedBulkhead`] collects under its lock to wake once the lock is dropped.
//!
//! One waker is kept inline, so the common case (one acceptor waiting on the limit; one
//! waiter granted a slot by a release) allocates nothing; more go to a `Vec`. The list is not
//! itself shared: it lives under its owner's mutex, and [`wake`](WakerList::wake) consumes
//! it, so the owner [`take`](WakerList::take)s the list under the lock and wakes it after
//! unlocking (a woken task may poll, and lock, at once). The loom model below checks that
//! pattern loses no wake-up.
//!
//! [`SharedLimit`]: super::limit::SharedLimit
//! [`SharedBulkhead`]: super::bulkhead::SharedBulkhead

use alloc::vec::Vec;
use core::task::Waker;

/// Wakers to wake; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct WakerList {
    first: Option<Waker>,
    rest: Vec<Waker>,
}

impl WakerList {
    /// Wakers in the list.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()).saturating_add(self.rest.len())
    }

    fn iter(&self) -> impl Iterator<Item = &Waker> {
        self.first.iter().chain(&self.rest)
    }

    /// Adds `waker`, however many wakers of the same task are in the list already (a batch
    /// to wake: each waiter's own waker, taken out of it).
    pub(crate) fn push(&mut self, waker: Waker) {
        if self.first.is_none() {
            self.first = Some(waker);
        } else {
            self.rest.push(waker);
        }
    }

    /// Registers `waker` unless a waker that wakes the same task is in the list; `false`
    /// if one was (a re-poll of the same wait).
    pub(crate) fn register(&mut self, waker: &Waker) -> bool {
        if self.iter().any(|w| w.will_wake(waker)) {
            return false;
        }
        self.push(waker.clone());
        true
    }

    /// Forgets every waker that wakes the same task as `waker`.
    pub(crate) fn remove(&mut self, waker: &Waker) {
        self.rest.retain(|w| !w.will_wake(waker));
        if self.first.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.first = self.rest.pop();
        }
    }

    /// The list, leaving this one empty (take it under the lock, wake it after).
    pub(crate) fn take(&mut self) -> Self {
        core::mem::take(self)
    }

    /// Wakes every waker in the list. Call with no lock held.
    pub(crate) fn wake(self) {
        if let Some(w) = self.first {
            w.wake();
        }
        for w in self.rest {
            w.wake();
        }
    }
}

#[cfg(test)]
#[cfg(not(keel_loom))]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn task() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn register_keeps_one_waker_per_task_and_wake_wakes_each_once() {
        let (a, wa) = task();
        let (b, wb) = task();
        let (c, wc) = task();
        let mut list = WakerList::default();
        assert!(list.register(&wa));
        assert!(!list.register(&wa.clone()), "the same task again");
        assert!(list.register(&wb));
        assert!(list.register(&wc));
        assert_eq!(list.len(), 3);
        list.take().wake();
        assert_eq!(list.len(), 0);
        for n in [&a, &b, &c] {
            assert_eq!(n.0.load(Ordering::Relaxed), 1);
        }
    }

    #[test]
    fn remove_forgets_only_that_task_wherever_it_is() {
        let (a, wa) = task();
        let (b, wb) = task();
        let (c, wc) = task();
        let mut list = WakerList::default();
        for w in [&wa, &wb, &wc] {
            list.register(w);
        }
        list.remove(&wa); // the inline one: another takes its place
        assert_eq!(list.len(), 2);
        assert!(!list.register(&wb) && !list.register(&wc));
        list.remove(&wc);
        list.remove(&wc); // gone already: nothing happens
        assert_eq!(list.len(), 1);
        list.take().wake();
        let woken: Vec<usize> = [&a, &b, &c]
            .iter()
            .map(|n| n.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(woken, [0, 1, 0]);
    }

    #[test]
    fn push_keeps_every_waker_of_a_batch() {
        let (a, wa) = task();
        let mut list = WakerList::default();
        list.push(wa.clone());
        list.push(wa);
        assert_eq!(list.len(), 2);
        list.wake();
        assert_eq!(a.0.load(Ordering::Relaxed), 2);
    }
}

#[cfg(test)]
#[cfg(keel_loom)]
mod loom_tests {
    use super::*;
    use crate::sync::shim::{Arc, AtomicBool, Mutex, Ordering};
    use loom::thread;
    use std::task::Wake;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// The owners' pattern: a waiter checks a condition and registers under the lock; the
    /// other side makes the condition true, takes the list under the lock and wakes it
    /// unlocked. In every interleaving the waiter saw the condition or is woken.
    #[test]
    fn loom_waker_list_loses_no_wake_up() {
        loom::model(|| {
            let ready = Arc::new(AtomicBool::new(false));
            let list = Arc::new(Mutex::new(WakerList::default()));
            let woken = std::sync::Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(std::sync::Arc::clone(&woken));

            let (r, l) = (Arc::clone(&ready), Arc::clone(&list));
            let releaser = thread::spawn(move || {
                r.store(true, Ordering::Release);
                let taken = l.lock().expect("not poisoned").take();
                taken.wake();
            });

            let saw_ready = {
                let mut guard = list.lock().expect("not poisoned");
                if ready.load(Ordering::Acquire) {
                    true
                } else {
                    guard.register(&waker);
                    false
                }
            };
            releaser.join().expect("releaser");
            assert!(
                saw_ready || woken.0.load(Ordering::Acquire),
                "a lost wake-up"
            );
        });
    }
}
