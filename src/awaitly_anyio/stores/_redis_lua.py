"""The Redis driver's Lua scripts, as named constants (`awaitly_anyio.stores.redis`).

Each script is one atomic change of one run: its run hash, its steps hash and the
two sorted-set indexes (see the Redis store's module documentation for the key
layout).  Every script documents its ``KEYS`` and ``ARGV``; times are epoch seconds
as the text of a float, and ``''`` stands for "none".  The scripts are sent with
``EVALSHA`` (`awaitly_anyio._redis_client.ScriptRunner`), so their text is the
name the server knows them by: changing a byte makes a new script.
"""

from __future__ import annotations

__all__ = [
    "CHECKPOINT",
    "CREATE_CLAIMED",
    "DELETE",
    "FINISH",
    "RELEASE",
    "RENEW",
    "SAVE",
]

SAVE = """
local lease = redis.call('HMGET', KEYS[1], 'lease_owner', 'lease_expires_at')
redis.call('DEL', KEYS[1], KEYS[2])
local i = 5
local fields = {}
while ARGV[i] ~= '--' do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  i = i + 2
end
if lease[1] then
  fields[#fields + 1] = 'lease_owner'
  fields[#fields + 1] = lease[1]
  fields[#fields + 1] = 'lease_expires_at'
  fields[#fields + 1] = lease[2]
end
redis.call('HSET', KEYS[1], unpack(fields))
i = i + 1
local batch = {}
while i <= #ARGV do
  batch[#batch + 1] = ARGV[i]
  batch[#batch + 1] = ARGV[i + 1]
  i = i + 2
  if #batch >= 1000 then
    redis.call('HSET', KEYS[2], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('HSET', KEYS[2], unpack(batch)) end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[4] == '1' then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
else redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[3] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""
"""Replace a run (``save``), keeping its stored lease.  KEYS: run, steps, index, active.
ARGV: id, now, ttl_ms (``''`` = none), active (``0``/``1``), then the run's
field/value pairs, ``--``, then the steps hash's field/value pairs."""

_LIVE_FN = """
local function live(key, now)
  local exp = redis.call('HGET', key, 'expires_at')
  if not exp then return false end
  local at = tonumber(exp)
  return exp == '' or at == nil or at > tonumber(now)
end
"""
# A live run: present and not expired at ``now`` (a damaged expiry counts as live, so
# that the run is reported, never dropped).  Put in front of the scripts that use it.

CHECKPOINT = """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'lease_owner')
if not run[1] or (run[1] ~= '' and tonumber(run[1]) <= tonumber(ARGV[1])) then return 0 end
if ARGV[2] ~= '' and run[2] ~= ARGV[2] then return -1 end
if redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) == 1 then
  -- A new step goes after the others; one recorded again keeps its place.
  redis.call('HSET', KEYS[2], '\\0' .. ARGV[3], redis.call('HINCRBY', KEYS[2], '\\0', 1))
end
return 1
"""
"""Write one step record.  KEYS: run, steps.  ARGV: now, owner (``''`` = any), step key,
record JSON.  Returns 1 (written), 0 (no such live run), -1 (another owner holds the
lease).  The run's ``updated_at`` moves when it starts and ends, not per step: a
checkpoint reads the run hash once and writes the steps hash only."""

CREATE_CLAIMED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'workflow_name', ARGV[3], 'status', 'running',
  'result_json', '', 'metadata_json', ARGV[4], 'created_at', ARGV[2], 'updated_at', ARGV[2],
  'expires_at', '', 'format_version', ARGV[7], 'lease_owner', ARGV[5],
  'lease_expires_at', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return 1
"""
"""Create a new run, leased, if its key is free.  KEYS: run, steps, index, active.  ARGV:
id, now, workflow_name, metadata JSON, owner, lease_expires_at, format version.
Returns 1 (created) or 0 (the key exists: nothing written)."""

FINISH = (
    _LIVE_FN
    + """
if not live(KEYS[1], ARGV[2]) then return 0 end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'result_json', ARGV[5], 'updated_at', ARGV[2],
  'expires_at', ARGV[6], 'lease_owner', '', 'lease_expires_at', '')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[4] == 'cancelled' then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
else redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[7] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
return 1
"""
)
"""Record the end of a run whose metadata does not change, clearing its lease.  KEYS:
run, steps, index, active.  ARGV: id, now, owner (``''`` = any), status, result JSON,
expires_at, ttl_ms.  Returns 1 (done), 0 (no such live run), -1 (another owner holds
the lease)."""

RENEW = (
    _LIVE_FN
    + """
if not live(KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_expires_at', ARGV[3])
return 1
"""
)
"""Extend a lease.  KEYS: run.  ARGV: now, owner, new lease_expires_at.  Returns 1 if
renewed, 0 if the run is gone or another owner (or none) holds it."""

RELEASE = """
if redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_expires_at', '')
end
return 1
"""
"""Clear a lease if its holder is ``owner``.  KEYS: run.  ARGV: owner."""

DELETE = (
    _LIVE_FN
    + """
local kind = redis.call('TYPE', KEYS[1])['ok']
local was = kind ~= 'none'
if kind == 'hash' and redis.call('HEXISTS', KEYS[1], 'expires_at') == 1 then
  was = live(KEYS[1], ARGV[2])
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if was then return 1 end
return 0
"""
)
"""Remove a run, its steps and its index entries.  KEYS: run, steps, index, active.
ARGV: id, now.  Returns 1 if a live run was deleted (a run key that is not a hash,
a damaged run, counts as one), else 0."""
