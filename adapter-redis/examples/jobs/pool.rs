//! A bounded pool of Redis connections that finds and reclaims leaked ones.
//!
//! At most `size` connections are checked out at once (a semaphore); a checkout waits at most
//! `wait` for one. Every checkout is tracked by keel's leak detector
//! ([`keel_core::leak::LeakDetector`]) under its checkout id: a connection held for
//! `leak_threshold` or longer is reported (a log line with its id and age,
//! `jobs_pool_leaks_total`, `jobs_pool_leak_age_seconds`) and its slot is given back to the
//! pool, so a leaking job costs the pool at most one slot for `leak_threshold` instead of the
//! slot for ever. The leaker's handle stays usable (it is still a connection) but no longer
//! counts against the pool, and dropping it later gives nothing back twice.

use std::collections::HashSet;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use keel_core::leak::{LeakConfig, LeakDetector, LeakEvent};
use redis::aio::MultiplexedConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most checkouts the detector tracks at once: the pool's slots plus the leaks it remembers.
const TRACKED: usize = 256;

struct Out {
    /// Ids of the checkouts that count against the pool.
    held: HashSet<u64>,
    detector: LeakDetector<TRACKED>,
}

struct Inner {
    client: redis::Client,
    size: usize,
    wait: Duration,
    free: Mutex<Vec<MultiplexedConnection>>,
    permits: Arc<Semaphore>,
    /// Checkouts in progress and the detector watching them, under one lock.
    out: Mutex<Out>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The critical sections below cannot panic half-way; a poisoned lock still holds
    // consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

/// A checked-out connection; back to the pool on drop.
pub struct Conn {
    pool: Arc<Inner>,
    id: u64,
    conn: Option<MultiplexedConnection>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Pool {
    pub fn new(
        client: redis::Client,
        size: usize,
        wait: Duration,
        leak_threshold: Duration,
    ) -> Result<Pool, String> {
        metrics::gauge!("jobs_pool_size").set(size as f64);
        let config = LeakConfig::builder()
            .threshold(leak_threshold)
            .build()
            .map_err(|e| e.to_string())?;
        let detector = LeakDetector::new(config, keel_tokio::now());
        Ok(Pool {
            inner: Arc::new(Inner {
                client,
                size,
                wait,
                free: Mutex::new(Vec::with_capacity(size)),
                permits: Arc::new(Semaphore::new(size)),
                out: Mutex::new(Out {
                    held: HashSet::new(),
                    detector,
                }),
                next: AtomicU64::new(0),
            }),
        })
    }

    /// A connection, waiting at most the pool's `wait` for a free slot.
    pub async fn get(&self) -> Result<Conn, String> {
        let inner = &self.inner;
        let permit =
            match tokio::time::timeout(inner.wait, inner.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    metrics::counter!("jobs_pool_exhausted_total").increment(1);
                    return Err(format!(
                        "the pool's {} connections are all in use",
                        inner.size
                    ));
                }
            };
        let reuse = lock(&inner.free).pop();
        let conn = match reuse {
            Some(c) => c,
            None => inner
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("redis connect: {e}"))?,
        };
        let id = inner.next.fetch_add(1, Ordering::Relaxed);
        let in_use = {
            let mut out = lock(&inner.out);
            out.held.insert(id);
            // Overflow (more than TRACKED out at once) only means this one goes unwatched.
            let _ = out.detector.on_acquire(keel_tokio::now(), id);
            out.held.len()
        };
        metrics::gauge!("jobs_pool_in_use").set(in_use as f64);
        Ok(Conn {
            pool: inner.clone(),
            id,
            conn: Some(conn),
            permit: Some(permit),
        })
    }

    /// When the oldest tracked checkout reaches the leak threshold, if any is out.
    pub fn next_leak_deadline(&self) -> Option<keel_core::time::Instant> {
        lock(&self.inner.out).detector.poll_timeout()
    }

    /// Reports every checkout held for the threshold or longer and gives its slot back to the
    /// pool; reports leaked connections released at last. Returns how many leaks were new.
    pub fn reclaim_leaks(&self) -> usize {
        let inner = &self.inner;
        let mut new = 0;
        let mut out = lock(&inner.out);
        out.detector.handle_timeout(keel_tokio::now());
        while let Some(event) = out.detector.poll_event() {
            match event {
                LeakEvent::Leaked { id, age, .. } => {
                    new += 1;
                    metrics::counter!("jobs_pool_leaks_total").increment(1);
                    metrics::histogram!("jobs_pool_leak_age_seconds").record(age.as_secs_f64());
                    // Still out: its slot comes back now (the leaker's permit is forgotten when
                    // it drops the handle). Released since: nothing to reclaim.
                    let reclaimed = out.held.remove(&id);
                    if reclaimed {
                        inner.permits.add_permits(1);
                    }
                    // `age_ms` and `late_ms` (how long after the threshold it was found) are
                    // read by the load script.
                    eprintln!(
                        "leak: pool connection {id} held for {age:?} age_ms={} late_ms={}{}",
                        age.as_millis(),
                        age.saturating_sub(out.detector.config().threshold())
                            .as_millis(),
                        if reclaimed {
                            ": slot reclaimed"
                        } else {
                            " (released since)"
                        }
                    );
                }
                LeakEvent::Released { id, held } => {
                    eprintln!("leak: pool connection {id} released at last after {held:?}");
                }
                _ => {}
            }
        }
        metrics::gauge!("jobs_pool_in_use").set(out.held.len() as f64);
        new
    }
}

impl Deref for Conn {
    type Target = MultiplexedConnection;
    fn deref(&self) -> &MultiplexedConnection {
        // Some until drop.
        self.conn.as_ref().expect("a checked-out connection")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        // Some until drop.
        self.conn.as_mut().expect("a checked-out connection")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        let mut out = lock(&self.pool.out);
        let _ = out.detector.on_release(keel_tokio::now(), self.id);
        if out.held.remove(&self.id) {
            lock(&self.pool.free).push(conn);
            metrics::gauge!("jobs_pool_in_use").set(out.held.len() as f64);
            drop(permit);
        } else {
            // Reclaimed as a leak: its slot was replaced already.
            permit.forget();
        }
    }
}
