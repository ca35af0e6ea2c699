//! The server-side GCRA step: a Lua mirror of [`keel_core::rate::step`].
//!
//! Redis runs Lua 5.1, whose numbers are IEEE doubles: exact integers only up to 2^53. A TAT in
//! nanoseconds since the Unix epoch (about 1.7 × 10^18) does not fit, so the script keeps every
//! absolute instant as a pair (seconds, nanoseconds) of values (each exact; passed as multiple
//! values, not tables, so a decision allocates no Lua table but its reply) and every relative quantity
//! (the emission interval `T`, the tolerance `τ`, the batch weight `T × (n - 1)`) as one number,
//! which is exact because keel-redis requires `burst × T <= 2^53 ns` (about 104 days). Additions
//! and subtractions saturate at 0 and `u64::MAX` exactly as the core's `u64` arithmetic does, so
//! the script and the core agree bit for bit (the conformance test replays random traces through
//! both).
//!
//! Arguments: `KEYS[1]` the state key; `ARGV[1]` the time in decimal nanoseconds, or empty for
//! the server's `TIME`; `ARGV[2]` `T` and `ARGV[3]` `τ` in nanoseconds; `ARGV[4]` the burst;
//! `ARGV[5]` `n`; `ARGV[6]` `1` to give the key a time to live, `0` not to.
//!
//! Reply: `{code, tat, now, retry_at, pttl}`: code 1 admitted, 0 rate limited, 2 a batch over the
//! burst; `tat` the stored TAT after the step (decimal ns, `0` for none); `now` the time used;
//! `retry_at` for code 0 (else empty); `pttl` for code 1 with `n > 0`: the time until the stored
//! state equals a fresh key's, in milliseconds rounded up (the key's `PX` when `ARGV[6]` is
//! `1`), else 0. A key holding anything but a TAT is the error `KEEL_BADSTATE`.

use keel_core::rate::RateLimited;
use keel_core::Instant;
use keel_core::Rejected;
use redis::Value;

use crate::FleetError;

/// The script's source (what `SCRIPT LOAD` receives).
pub const GCRA_LUA: &str = r#"
local E9 = 1000000000
-- u64::MAX and the largest TAT (u64::MAX - 1) as (seconds, nanoseconds)
local MAXS, MAXN, TMAXN = 18446744073, 709551615, 709551614

-- Instants travel as pairs of values (s, ns) with 0 <= ns < E9, each exact in a double.
local function parse(str)
  if type(str) ~= 'string' or #str == 0 or #str > 20 or not string.match(str, '^%d+$') then
    return nil
  end
  local l = #str
  if l <= 9 then return 0, tonumber(str) end
  local s, ns = tonumber(string.sub(str, 1, l - 9)), tonumber(string.sub(str, l - 8))
  if s > MAXS or (s == MAXS and ns > MAXN) then return nil end
  return s, ns
end

local function fmt(s, ns)
  if s == 0 then return string.format('%d', ns) end
  return string.format('%d%09d', s, ns)
end

local function lt(as, an, bs, bn)
  return as < bs or (as == bs and an < bn)
end

-- r: an integer in [0, 2^53]; returns (seconds, nanoseconds) exactly
local function split(r)
  local s = math.floor(r / E9)
  local ns = r - s * E9
  if ns < 0 then s = s - 1; ns = ns + E9 elseif ns >= E9 then s = s + 1; ns = ns - E9 end
  return s, ns
end

local function add_sat(s, ns, r)
  if r == 0 then return s, ns end
  local rs, rn = split(r)
  s, ns = s + rs, ns + rn
  if ns >= E9 then s = s + 1; ns = ns - E9 end
  if lt(MAXS, MAXN, s, ns) then return MAXS, MAXN end
  return s, ns
end

local function sub_sat(s, ns, r)
  if r == 0 then return s, ns end
  local rs, rn = split(r)
  s, ns = s - rs, ns - rn
  if ns < 0 then s = s - 1; ns = ns + E9 end
  if s < 0 then return 0, 0 end
  return s, ns
end

if redis.replicate_commands then redis.replicate_commands() end

local nows, nown
if ARGV[1] == '' then
  local tm = redis.call('TIME')
  nows, nown = tonumber(tm[1]), tonumber(tm[2]) * 1000
else
  nows, nown = parse(ARGV[1])
  if nows == nil then return redis.error_reply('KEEL_BADARG the time is not a u64') end
end
local t, tau, burst, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local got = redis.pcall('GET', KEYS[1])
if type(got) == 'table' and got.err then
  return redis.error_reply('KEEL_BADSTATE ' .. got.err)
end
local ts, tn = 0, 0
if got then
  ts, tn = parse(got)
  if ts == nil or lt(MAXS, TMAXN, ts, tn) then
    return redis.error_reply('KEEL_BADSTATE the key does not hold a TAT (delete it)')
  end
end

if n == 0 then return {1, fmt(ts, tn), fmt(nows, nown), '', 0} end
if n > burst then return {2, fmt(ts, tn), fmt(nows, nown), '', 0} end

local weight = t * (n - 1)
-- tat + weight - tau without the intermediate sum (it can pass the end of the clock)
local as, an
if weight <= tau then
  as, an = sub_sat(ts, tn, tau - weight)
else
  as, an = add_sat(ts, tn, weight - tau)
end
if lt(nows, nown, as, an) then
  return {0, fmt(ts, tn), fmt(nows, nown), fmt(as, an), 0}
end
local bs, bn = nows, nown
if lt(nows, nown, ts, tn) then bs, bn = ts, tn end
local ys, yn = add_sat(bs, bn, weight)
local zs, zn = add_sat(ys, yn, t)
if lt(MAXS, TMAXN, zs, zn) then zs, zn = MAXS, TMAXN end

-- the state equals a fresh key's once now reaches the TAT: live that long, in ms rounded up
local d = (zs - nows) * E9 + (zn - nown)
local ms = math.floor(d / 1000000)
local rem = d - ms * 1000000
if rem < 0 then ms = ms - 1; rem = rem + 1000000 elseif rem >= 1000000 then ms = ms + 1; rem = rem - 1000000 end
if rem > 0 then ms = ms + 1 end
local new = fmt(zs, zn)
if ARGV[6] == '1' and ms > 0 then
  redis.call('SET', KEYS[1], new, 'PX', ms)
else
  redis.call('SET', KEYS[1], new)
end
return {1, new, fmt(nows, nown), '', ms}
"#;

/// The script's answer for one decision, on the clock the script used (the Redis server's
/// `TIME`, or the time the caller passed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawStep {
    /// `Ok(())` if admitted; otherwise the core's rejection ([`keel_core::rate::step`]'s),
    /// `retry_at` on the same clock as `now`.
    pub decision: Result<(), Rejected<RateLimited>>,
    /// The TAT stored after the step (`Instant::ZERO` for a key with no state).
    pub tat: Instant,
    /// The time the decision was made at.
    pub now: Instant,
    /// For an admission: the time until the stored state equals a fresh key's, in milliseconds
    /// rounded up (the key's time to live when idle keys expire); else 0.
    pub pttl_ms: u64,
}

fn instant(v: &Value) -> Result<Instant, FleetError> {
    let text = match v {
        Value::BulkString(b) => core::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s.as_str()),
        _ => None,
    };
    text.and_then(|s| s.parse::<u64>().ok())
        .map(Instant::from_nanos)
        .ok_or(FleetError::BadReply("a time that is not a u64"))
}

fn int(v: &Value) -> Result<i64, FleetError> {
    match v {
        Value::Int(i) => Ok(*i),
        _ => Err(FleetError::BadReply(
            "an integer field that is not an integer",
        )),
    }
}

/// Decodes the script's reply (see the module docs); `burst` fills `InsufficientCapacity`.
pub(crate) fn decode(v: &Value, burst: u32) -> Result<RawStep, FleetError> {
    let Value::Array(items) = v else {
        return Err(FleetError::BadReply("the script did not return an array"));
    };
    let [code, tat, now, retry, pttl] = items.as_slice() else {
        return Err(FleetError::BadReply(
            "the script returned the wrong number of fields",
        ));
    };
    let decision = match int(code)? {
        1 => Ok(()),
        0 => Err(Rejected {
            reason: RateLimited::OverRate,
            retry_at: Some(instant(retry)?),
        }),
        2 => Err(Rejected {
            reason: RateLimited::InsufficientCapacity { burst },
            retry_at: None,
        }),
        _ => return Err(FleetError::BadReply("an unknown decision code")),
    };
    Ok(RawStep {
        decision,
        tat: instant(tat)?,
        now: instant(now)?,
        pttl_ms: u64::try_from(int(pttl)?).unwrap_or(0),
    })
}
