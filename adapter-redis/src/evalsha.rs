//! A Lua script run by its SHA1 (`EVALSHA`), the one way keel-redis talks to Redis: the
//! fleet limiter's GCRA step and the fleet bulkhead's lease script both go through
//! [`CachedScript::eval`].
//!
//! The script is loaded (`SCRIPT LOAD`) at first use and again when the server answers
//! `NOSCRIPT` (a restart, a `SCRIPT FLUSH`, a failover to a replica that never saw it); the SHA
//! is cached in between, so a call costs one round trip.

use std::sync::Mutex;

use redis::aio::ConnectionManager;
use redis::{Cmd, RedisResult, Value};

use crate::{lock, FleetError};

/// A Lua script and the SHA the server last gave it.
pub(crate) struct CachedScript {
    lua: &'static str,
    sha: Mutex<Option<String>>,
}

impl CachedScript {
    /// The script `lua`, not loaded yet.
    pub(crate) const fn new(lua: &'static str) -> Self {
        CachedScript {
            lua,
            sha: Mutex::new(None),
        }
    }

    /// Runs the script with the arguments `args` adds after the SHA (`KEYS` count, keys,
    /// `ARGV`), loading it first when no SHA is cached and once more on `NOSCRIPT`; `on_load`
    /// runs after each load (a counter).
    ///
    /// The outer `Err` is a failed `SCRIPT LOAD`; the inner result is the `EVALSHA`'s reply,
    /// for the caller to judge (its error codes name the script's own failures).
    pub(crate) async fn eval(
        &self,
        conn: &mut ConnectionManager,
        args: impl Fn(&mut Cmd),
        on_load: impl Fn(),
    ) -> Result<RedisResult<Value>, FleetError> {
        let cached = lock(&self.sha).clone();
        let sha = match cached {
            Some(sha) => sha,
            None => self.load(conn, &on_load).await?,
        };
        let build = |sha: &str| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha);
            args(&mut cmd);
            cmd
        };
        let reply = build(&sha).query_async(conn).await;
        Ok(match reply {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let sha = self.load(conn, &on_load).await?;
                build(&sha).query_async(conn).await
            }
            other => other,
        })
    }

    async fn load(
        &self,
        conn: &mut ConnectionManager,
        on_load: &impl Fn(),
    ) -> Result<String, FleetError> {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.lua)
            .query_async(conn)
            .await?;
        on_load();
        *lock(&self.sha) = Some(sha.clone());
        Ok(sha)
    }
}
