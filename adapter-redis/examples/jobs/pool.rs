//! A bounded pool of Redis connections that finds and reclaims leaked ones.
//!
//! At most `size` connections are checked out at once (a semaphore); a checkout waits at most
//! `wait` for one. Every checkout is recorded with the instant it began: a connection held
//! longer than `leak_threshold` is reported (a log line with its age, `jobs_pool_leaks_total`,
//! `jobs_pool_leak_age_seconds`) and its slot is given back to the pool, so a leaking job costs
//! the pool at most one slot for `leak_threshold` instead of the slot for ever. The leaker's
//! handle stays usable (it is still a connection) but no longer counts against the pool, and
//! dropping it later gives nothing back twice.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

struct Inner {
    client: redis::Client,
    size: usize,
    wait: Duration,
    free: Mutex<Vec<MultiplexedConnection>>,
    permits: Arc<Semaphore>,
    /// Checkouts in progress: id → when it began.
    out: Mutex<HashMap<u64, Instant>>,
    next: AtomicU64,
    leaks: AtomicU64,
    max_leak_age_ms: AtomicU64,
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
    pub fn new(client: redis::Client, size: usize, wait: Duration) -> Pool {
        metrics::gauge!("jobs_pool_size").set(size as f64);
        Pool {
            inner: Arc::new(Inner {
                client,
                size,
                wait,
                free: Mutex::new(Vec::with_capacity(size)),
                permits: Arc::new(Semaphore::new(size)),
                out: Mutex::new(HashMap::new()),
                next: AtomicU64::new(0),
                leaks: AtomicU64::new(0),
                max_leak_age_ms: AtomicU64::new(0),
            }),
        }
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
            out.insert(id, Instant::now());
            out.len()
        };
        metrics::gauge!("jobs_pool_in_use").set(in_use as f64);
        Ok(Conn {
            pool: inner.clone(),
            id,
            conn: Some(conn),
            permit: Some(permit),
        })
    }

    /// Reports and reclaims every checkout older than `threshold`; returns how many.
    pub fn reclaim_leaks(&self, threshold: Duration) -> usize {
        let inner = &self.inner;
        let now = Instant::now();
        let leaked: Vec<(u64, Duration)> = {
            let mut out = lock(&inner.out);
            let old: Vec<(u64, Duration)> = out
                .iter()
                .map(|(&id, &since)| (id, now.saturating_duration_since(since)))
                .filter(|&(_, age)| age > threshold)
                .collect();
            for (id, _) in &old {
                out.remove(id);
            }
            old
        };
        for &(id, age) in &leaked {
            inner.leaks.fetch_add(1, Ordering::Relaxed);
            let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            inner.max_leak_age_ms.fetch_max(ms, Ordering::Relaxed);
            metrics::counter!("jobs_pool_leaks_total").increment(1);
            metrics::histogram!("jobs_pool_leak_age_seconds").record(age.as_secs_f64());
            eprintln!("leak: pool connection {id} held for {age:?} (threshold {threshold:?}): slot reclaimed");
            // The leaker keeps its permit (forgotten when it drops the handle): a new one
            // stands in for it.
            inner.permits.add_permits(1);
        }
        metrics::gauge!("jobs_pool_in_use").set(lock(&inner.out).len() as f64);
        leaked.len()
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
        self.conn.as_mut().expect("a checked-out connection")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        let mut out = lock(&self.pool.out);
        if out.remove(&self.id).is_some() {
            lock(&self.pool.free).push(conn);
            metrics::gauge!("jobs_pool_in_use").set(out.len() as f64);
            drop(permit);
        } else {
            // Reclaimed as a leak: its slot was replaced already.
            permit.forget();
        }
    }
}
