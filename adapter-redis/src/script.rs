//! The server-side GCRA step: a Lua mirror of [`keel_core::rate::step`].
//!
//! Redis runs Lua 5.1, whose numbers are IEEE doubles: exact integers only up to 2^53. A TAT in
//! nanoseconds since the Unix epoch (about 1.7 × 10^18) does not fit, so the script keeps every
//! absolute instant as a pair `{seconds, nanoseconds}` (each exact) and every relative quantity
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

use keel_core::rate::CheckNError;
use keel_core::Instant;
use redis::Value;

use crate::FleetError;

/// The script's source (what `SCRIPT LOAD` receives).
pub const GCRA_LUA: &str = r#"
local E9 = 1000000000
local U64MAX = {18446744073, 709551615}
local TATMAX = {18446744073, 709551614}

local function parse(str)
  if type(str) ~= 'string' or #str == 0 or #str > 20 or not string.match(str, '^%d+$') then
    return nil
  end
  local l = #str
  if l <= 9 then return {0, tonumber(str)} end
  local s = tonumber(string.sub(str, 1, l - 9))
  local ns = tonumber(string.sub(str, l - 8))
  if s > U64MAX[1] or (s == U64MAX[1] and ns > U64MAX[2]) then return nil end
  return {s, ns}
end

local function fmt(a)
  if a[1] == 0 then return string.format('%d', a[2]) end
  return string.format('%d%09d', a[1], a[2])
end

local function lt(a, b)
  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])
end

-- r: an integer in [0, 2^53]; returns {seconds, nanoseconds} exactly
local function split(r)
  local s = math.floor(r / E9)
  local ns = r - s * E9
  if ns < 0 then s = s - 1; ns = ns + E9 elseif ns >= E9 then s = s + 1; ns = ns - E9 end
  return {s, ns}
end

local function add_sat(a, r)
  local b = split(r)
  local s, ns = a[1] + b[1], a[2] + b[2]
  if ns >= E9 then s = s + 1; ns = ns - E9 end
  local c = {s, ns}
  if lt(U64MAX, c) then return {U64MAX[1], U64MAX[2]} end
  return c
end

local function sub_sat(a, r)
  local b = split(r)
  local s, ns = a[1] - b[1], a[2] - b[2]
  if ns < 0 then s = s - 1; ns = ns + E9 end
  if s < 0 then return {0, 0} end
  return {s, ns}
end

if redis.replicate_commands then redis.replicate_commands() end

local now
if ARGV[1] == '' then
  local tm = redis.call('TIME')
  now = {tonumber(tm[1]), tonumber(tm[2]) * 1000}
else
  now = parse(ARGV[1])
  if now == nil then return redis.error_reply('KEEL_BADARG the time is not a u64') end
end
local t, tau, burst, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local got = redis.pcall('GET', KEYS[1])
if type(got) == 'table' and got.err then
  return redis.error_reply('KEEL_BADSTATE ' .. got.err)
end
local tat = {0, 0}
if got then
  tat = parse(got)
  if tat == nil or lt(TATMAX, tat) then
    return redis.error_reply('KEEL_BADSTATE the key does not hold a TAT (delete it)')
  end
end

if n == 0 then return {1, fmt(tat), fmt(now), '', 0} end
if n > burst then return {2, fmt(tat), fmt(now), '', 0} end

local weight = t * (n - 1)
local allow = sub_sat(add_sat(tat, weight), tau)
if lt(now, allow) then
  return {0, fmt(tat), fmt(now), fmt(allow), 0}
end
local base = now
if lt(now, tat) then base = tat end
local new = add_sat(add_sat(base, weight), t)
if lt(TATMAX, new) then new = {TATMAX[1], TATMAX[2]} end

-- the state equals a fresh key's once now reaches the TAT: live that long, in ms rounded up
local d = (new[1] - now[1]) * E9 + (new[2] - now[2])
local ms = math.floor(d / 1000000)
local rem = d - ms * 1000000
if rem < 0 then ms = ms - 1; rem = rem + 1000000 elseif rem >= 1000000 then ms = ms + 1; rem = rem - 1000000 end
if rem > 0 then ms = ms + 1 end
if ARGV[6] == '1' and ms > 0 then
  redis.call('SET', KEYS[1], fmt(new), 'PX', ms)
else
  redis.call('SET', KEYS[1], fmt(new))
end
return {1, fmt(new), fmt(now), '', ms}
"#;

/// The script's answer for one decision, on the clock the script used (the Redis server's
/// `TIME`, or the time the caller passed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawStep {
    /// `Ok(())` if admitted; otherwise the core's error, `retry_at` on the same clock as `now`.
    pub decision: Result<(), CheckNError>,
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
        0 => Err(CheckNError::NotUntil {
            retry_at: instant(retry)?,
        }),
        2 => Err(CheckNError::InsufficientCapacity { burst }),
        _ => return Err(FleetError::BadReply("an unknown decision code")),
    };
    Ok(RawStep {
        decision,
        tat: instant(tat)?,
        now: instant(now)?,
        pttl_ms: u64::try_from(int(pttl)?).unwrap_or(0),
    })
}
