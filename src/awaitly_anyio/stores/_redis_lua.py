"""The Redis driver's Lua scripts, as named constants (`awaitly_anyio.stores.redis`).

Each script is one atomic change of one run: its run hash, its steps hash, its
mailbox and the sorted-set indexes (see the Redis store's module documentation for
the key layout).  Every script documents its ``KEYS`` and ``ARGV``; times are epoch
seconds as the text of a float, and ``''`` stands for "none".  The scripts are sent
with ``EVALSHA`` (`awaitly_anyio._redis_client.ScriptRunner`), so their text is the
name the server knows them by: changing a byte makes a new script.

A run's mailbox is one hash: message ``n`` (1, 2...) sent with key ``k`` is the field
``k NUL n``; ``NUL 'h' k`` is the number of key ``k``'s oldest pending message (``1``
when absent) and ``NUL 't' k`` the last number given (never reused, so a message
read and then taken is known to be the same one).  A key holds no NUL.
"""

from __future__ import annotations

__all__ = [
    "BEGIN_WAIT",
    "CHECKPOINT",
    "CREATE_CLAIMED",
    "DELETE",
    "FINISH",
    "PEEK_MESSAGE",
    "RELEASE",
    "RENEW",
    "SAVE",
    "SEND",
    "TAKE_MESSAGE",
]

SAVE = """
local kept = redis.call('HMGET', KEYS[1], 'lease_owner', 'lease_expires_at',
  'wait_step', 'wait_key', 'wait_kind', 'wake_at')
redis.call('DEL', KEYS[1], KEYS[2])
local i = 5
local fields = {}
while ARGV[i] ~= '--' do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  i = i + 2
end
local names = {'lease_owner', 'lease_expires_at', 'wait_step', 'wait_key', 'wait_kind',
  'wake_at'}
for j = 1, 6 do
  if kept[j] then
    fields[#fields + 1] = names[j]
    fields[#fields + 1] = kept[j]
  end
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
if ARGV[4] == 'running' or ARGV[4] == 'cancelled' then
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
else redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[4] == 'waiting' and kept[6] and tonumber(kept[6]) then
  redis.call('ZADD', KEYS[6], kept[6], ARGV[1])
else redis.call('ZREM', KEYS[6], ARGV[1]) end
if ARGV[3] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
else redis.call('PERSIST', KEYS[5]) end
return 1
"""
"""Replace a run (``save``), keeping its stored lease, pending wait and mailbox.  KEYS:
run, steps, index, active, mailbox, waiting.  ARGV: id, now, ttl_ms (``''`` = none),
status, then the run's field/value pairs, ``--``, then the steps hash's field/value
pairs."""

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

_EXPIRED_FN = """
local function expired(exp, now)
  if not exp then return true end
  local at = tonumber(exp)
  return exp ~= '' and at ~= nil and at <= tonumber(now)
end
"""
# `_LIVE_FN`'s opposite on an ``expires_at`` already read (``false``: no run).

_DONE_WAITING = """
local function done_waiting(key, status, id, now, waiting, active)
  redis.call('HSET', key, 'wait_step', '', 'wait_key', '', 'wait_kind', '', 'wake_at', '')
  redis.call('ZREM', waiting, id)
  if status == 'waiting' then
    redis.call('HSET', key, 'status', 'running')
    redis.call('ZADD', active, now, id)
  end
end
"""
# Clear run ``key``'s pending wait (its step was recorded): a waiting run runs again.

CHECKPOINT = (
    _DONE_WAITING
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'lease_owner', 'wait_step')
if not run[1] or (run[1] ~= '' and tonumber(run[1]) <= tonumber(ARGV[1])) then return 0 end
if ARGV[2] ~= '' and run[2] ~= ARGV[2] then return -1 end
if redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) == 1 then
  -- A new step goes after the others; one recorded again keeps its place.
  redis.call('HSET', KEYS[2], '\\0' .. ARGV[3], redis.call('HINCRBY', KEYS[2], '\\0', 1))
end
if run[3] == ARGV[3] then
  done_waiting(KEYS[1], redis.call('HGET', KEYS[1], 'status'), ARGV[5], ARGV[1], KEYS[3],
    KEYS[4])
end
return 1
"""
)
"""Write one step record.  KEYS: run, steps, waiting, active.  ARGV: now, owner (``''`` =
any), step key, record JSON, id.  Returns 1 (written), 0 (no such live run), -1
(another owner holds the lease).  The run's ``updated_at`` moves when it starts and
ends, not per step: a checkpoint reads the run hash once and writes the steps hash
only, unless the step is the one the run waits for (its wait is then cleared and a
waiting run runs again)."""

CREATE_CLAIMED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[5])
redis.call('HSET', KEYS[1], 'workflow_name', ARGV[3], 'status', 'running',
  'result_json', '', 'metadata_json', ARGV[4], 'created_at', ARGV[2], 'updated_at', ARGV[2],
  'expires_at', '', 'format_version', ARGV[7], 'lease_owner', ARGV[5],
  'lease_expires_at', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
return 1
"""
"""Create a new run, leased, if its key is free.  KEYS: run, steps, index, active,
mailbox, waiting.  ARGV: id, now, workflow_name, metadata JSON, owner,
lease_expires_at, format version.  Returns 1 (created) or 0 (the key exists: nothing
written)."""

FINISH = (
    _LIVE_FN
    + """
if not live(KEYS[1], ARGV[2]) then return 0 end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'result_json', ARGV[5], 'updated_at', ARGV[2],
  'expires_at', ARGV[6], 'lease_owner', '', 'lease_expires_at', '',
  'wait_step', '', 'wait_key', '', 'wait_kind', '', 'wake_at', '')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[4] == 'cancelled' then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
else redis.call('ZREM', KEYS[4], ARGV[1]) end
redis.call('ZREM', KEYS[6], ARGV[1])
if ARGV[7] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  redis.call('PEXPIRE', KEYS[5], ARGV[7])
end
return 1
"""
)
"""Record the end of a run whose metadata does not change, clearing its lease and its
pending wait.  KEYS: run, steps, index, active, mailbox, waiting.  ARGV: id, now, owner
(``''`` = any), status, result JSON, expires_at, ttl_ms.  Returns 1 (done), 0 (no such
live run), -1 (another owner holds the lease)."""

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
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
if was then return 1 end
return 0
"""
)
"""Remove a run, its steps, its mailbox and its index entries.  KEYS: run, steps,
index, active, mailbox, waiting.  ARGV: id, now.  Returns 1 if a live run was deleted
(a run key that is not a hash, a damaged run, counts as one), else 0."""

SEND = (
    _EXPIRED_FN
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'status', 'wait_key')
if expired(run[1], ARGV[1]) then return 0 end
if run[2] == 'completed' or run[2] == 'failed' then return run[2] end
if ARGV[4] ~= '' then
  local head = redis.call('HGET', KEYS[3], '\\0h' .. ARGV[2]) or '1'
  if redis.call('HEXISTS', KEYS[3], ARGV[2] .. '\\0' .. head) == 1
    or redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 2 end
end
local n = redis.call('HINCRBY', KEYS[3], '\\0t' .. ARGV[2], 1)
redis.call('HSET', KEYS[3], ARGV[2] .. '\\0' .. n, ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
if run[2] == 'waiting' and run[3] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'wake_at', ARGV[1])
  redis.call('ZADD', KEYS[4], ARGV[1], ARGV[5])
end
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 1
"""
)
"""Append a message to a run's mailbox and wake its waiters.  KEYS: run, steps,
mailbox, waiting.  ARGV: now, key, value JSON, once (a step key; ``''`` = none), id,
the wake-up channel.  Returns 1 (sent), 0 (no such live run), 2 (``once`` refused:
a message with the key is pending or the step is recorded), or the status of a run
that ended (``completed``, ``failed``).  A run waiting for the key becomes due
(``wake_at = now``); the id is published on the channel."""

PEEK_MESSAGE = (
    _EXPIRED_FN
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'lease_owner')
if expired(run[1], ARGV[1]) then return 0 end
if ARGV[2] ~= '' and run[2] ~= ARGV[2] then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 2 end
local head = redis.call('HGET', KEYS[3], '\\0h' .. ARGV[3]) or '1'
local value = redis.call('HGET', KEYS[3], ARGV[3] .. '\\0' .. head)
if not value then return 2 end
return {head, value}
"""
)
"""Read (not take) a run's oldest pending message with a key.  KEYS: run, steps,
mailbox.  ARGV: now, owner (``''`` = any), key, step.  Returns ``{number, value
JSON}``, 2 (none pending, or the step is recorded already), 0 (no such live run) or
-1 (another owner holds the lease)."""

TAKE_MESSAGE = (
    _EXPIRED_FN
    + _DONE_WAITING
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'lease_owner', 'wait_step', 'status')
if expired(run[1], ARGV[1]) then return 0 end
if ARGV[2] ~= '' and run[2] ~= ARGV[2] then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 2 end
local head = redis.call('HGET', KEYS[3], '\\0h' .. ARGV[3]) or '1'
if head ~= ARGV[5] or redis.call('HDEL', KEYS[3], ARGV[3] .. '\\0' .. head) == 0 then
  return 3
end
redis.call('HSET', KEYS[3], '\\0h' .. ARGV[3], tostring(tonumber(head) + 1))
redis.call('HSET', KEYS[2], ARGV[4], ARGV[6])
redis.call('HSET', KEYS[2], '\\0' .. ARGV[4], redis.call('HINCRBY', KEYS[2], '\\0', 1))
if run[3] == ARGV[4] then
  done_waiting(KEYS[1], run[4], ARGV[7], ARGV[1], KEYS[4], KEYS[5])
end
return 1
"""
)
"""Take the message `PEEK_MESSAGE` read into a step: delete it and record the step (a
new step goes last), clearing the run's wait if it is the step's.  KEYS: run, steps,
mailbox, waiting, active.  ARGV: now, owner (``''`` = any), key, step, the message's
number, record JSON, id.  Returns 1 (taken), 0 (no such live run), -1 (another owner
holds the lease), 2 (the step was recorded meanwhile: nothing written) or 3 (that
message is no longer the oldest pending: read again)."""

BEGIN_WAIT = (
    _EXPIRED_FN
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'lease_owner', 'wait_step', 'wake_at')
if expired(run[1], ARGV[1]) then return {0, ''} end
if ARGV[2] ~= '' and run[2] ~= ARGV[2] then return {-1, ''} end
if ARGV[4] ~= '' then
  local head = redis.call('HGET', KEYS[2], '\\0h' .. ARGV[4]) or '1'
  if redis.call('HEXISTS', KEYS[2], ARGV[4] .. '\\0' .. head) == 1 then return {1, ''} end
end
redis.call('ZREM', KEYS[4], ARGV[7])
local wake = ARGV[6]
if run[3] == ARGV[3] then
  -- The same wait, resumed: its deadline stays.
  wake = run[4] or ''
  if not tonumber(wake) then wake = '' end
  redis.call('HSET', KEYS[1], 'status', 'waiting')
else
  redis.call('HSET', KEYS[1], 'status', 'waiting', 'updated_at', ARGV[1], 'wait_step', ARGV[3],
    'wait_key', ARGV[4], 'wait_kind', ARGV[5], 'wake_at', wake)
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[7])
end
if wake ~= '' then redis.call('ZADD', KEYS[5], wake, ARGV[7])
else redis.call('ZREM', KEYS[5], ARGV[7]) end
return {2, wake}
"""
)
"""Record that a run waits.  KEYS: run, mailbox, index, active, waiting.  ARGV: now,
owner (``''`` = any), step, key (``''`` = none: a timer), kind, wake_at (``''`` =
none), id.  Returns ``{code, wake_at}``: code 1 (a message with the key is pending:
nothing written), 2 (waiting until ``wake_at``, ``''`` = no deadline; a resumed wait
keeps its stored one), 0 (no such live run) or -1 (another owner holds the lease)."""
