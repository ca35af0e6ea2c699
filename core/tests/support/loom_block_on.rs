//! `block_on` for loom models: polls a future on the current loom thread, parking on a loom
//! condition variable between polls, so a lost wake-up is a deadlock loom reports. Included by
//! the loom test files with `#[path = "support/loom_block_on.rs"] mod loom_block_on;`.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use loom::sync::{Condvar, Mutex};

/// A waker that signals a loom condition variable (loom's own `block_on` needs its `futures`
/// feature).
struct Signal {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl std::task::Wake for Signal {
    fn wake(self: std::sync::Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

/// Polls `fut` to completion, blocking between polls until woken; a lost wake-up blocks for
/// ever, which loom reports as a deadlock.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let signal = std::sync::Arc::new(Signal {
        woken: Mutex::new(false),
        cv: Condvar::new(),
    });
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        let mut woken = signal.woken.lock().unwrap();
        while !*woken {
            woken = signal.cv.wait(woken).unwrap();
        }
        *woken = false;
    }
}
