"""The Redis driver's Lua scripts, as named constants (`awaitly_anyio.stores.redis`).

Each script is one atomic change of one run (its run hash, its steps hash, its
mailbox) and of the indexes that follow it (see the Redis store's module
documentation for the key layout).  Every script documents its ``KEYS`` and
``ARGV``; times are epoch seconds as the text of a float (made in Python: Lua would
print a number with 14 digits only), and ``''`` stands for "none".  The scripts are
sent with ``EVALSHA`` (`awaitly_anyio._redis_client.ScriptRunner`), so their text is
the name the server knows them by: changing a byte makes a new script.

A run's mailbox is one hash: message ``n`` (1, 2...) sent with key ``k`` is the field
``k NUL n`` and the time it was sent ``NUL 's' k NUL n`` (a message stored by a release
that kept no time counts as sent before any deadline); ``NUL 'h' k`` is the number of
key ``k``'s oldest pending message (``1`` when absent; never a taken one) and ``NUL
't' k`` the last number given (never reused).  A key holds no NUL.

Queued runs (the run hash's ``queue``) are found through per-queue keys named from
the prefix and the queue (the scripts that change a run's status name them
themselves, so a queued run's script reaches keys it was not given: one Redis, not
Redis Cluster): ``{prefix}queue:{q}``, the pending runs, a sorted set scored by
priority whose members are the run's ``queue_entry`` (its ``created_at`` as 16
order-keeping hex digits, NUL, its id), so equal priorities come out by creation
time, then id; ``{prefix}qrun:{q}``, a hash of the queue's started runs that have not
ended (id -> partition, ``''`` for none), checked run by run when a cap counts them
(so a run that expired or was deleted meanwhile stops counting); ``{prefix}qstart:{q}``,
a sorted set of the queue's starts by time, for the rate cap.
"""

from __future__ import annotations

__all__ = [
    "ADVANCE_SCHEDULE",
    "BEGIN_WAIT",
    "CACHE_DELETE",
    "CACHE_GET",
    "CACHE_PURGE",
    "CACHE_PUT",
    "CHECKPOINT",
    "CLAIM_QUEUED",
    "COUNT",
    "CREATE_CLAIMED",
    "DELETE",
    "DELETE_SCHEDULE",
    "END_ORPHANED_CANCEL",
    "ENQUEUE",
    "FINISH",
    "NOTIFY",
    "PUT_SCHEDULE",
    "READ",
    "RECEIVE",
    "RELEASE",
    "RENEW",
    "REQUEST_CANCEL",
    "SAVE",
    "SCHEDULES",
    "SEND",
]

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

_MAIL_FN = """
local function first_sent(mail, key, by)
  local head = tonumber(redis.call('HGET', mail, '\\0h' .. key) or '1')
  local last = tonumber(redis.call('HGET', mail, '\\0t' .. key) or '0')
  local limit = tonumber(by)
  for n = head, last do
    local value = redis.call('HGET', mail, key .. '\\0' .. n)
    if value then
      if not limit then return n, value end
      local at = tonumber(redis.call('HGET', mail, '\\0s' .. key .. '\\0' .. n) or '')
      if not at or at <= limit then return n, value end
    end
  end
  return nil, nil
end
local function take(mail, key, n)
  redis.call('HDEL', mail, key .. '\\0' .. n, '\\0s' .. key .. '\\0' .. n)
  local head = tonumber(redis.call('HGET', mail, '\\0h' .. key) or '1')
  if n == head then
    -- The head only ever names a pending message (or is past the last): `SEND`'s
    -- "once" test looks at it alone.
    local last = tonumber(redis.call('HGET', mail, '\\0t' .. key) or '0')
    head = head + 1
    while head <= last and redis.call('HEXISTS', mail, key .. '\\0' .. head) == 0 do
      head = head + 1
    end
    redis.call('HSET', mail, '\\0h' .. key, tostring(head))
  end
end
"""
# ``first_sent``: the number and value of the oldest pending message with ``key`` sent
# at or before ``by`` (``''``: any), or nil.  ``take``: delete message ``n`` (a later
# one may be taken before an older one sent after a deadline).

_QUEUE_FN = """
local function unqueue(prefix, id, queue, entry)
  if queue and queue ~= '' then
    if entry and entry ~= '' then redis.call('ZREM', prefix .. 'queue:' .. queue, entry) end
    redis.call('HDEL', prefix .. 'qrun:' .. queue, id)
  end
end
local function requeue(prefix, id, status, queue, entry, priority, partition)
  if queue == '' then return end
  if status == 'pending' then
    redis.call('ZADD', prefix .. 'queue:' .. queue, priority, entry)
  elseif status == 'running' or status == 'waiting' then
    redis.call('HSET', prefix .. 'qrun:' .. queue, id, partition)
  end
end
local function activity(active, id, status, cancel_at, now)
  if status == 'running' or (status == 'cancelled' and (cancel_at or '') == '') then
    redis.call('ZADD', active, now, id)
  else redis.call('ZREM', active, id) end
end
"""
# ``unqueue``: take a run out of its queue's keys (pending, started); ``requeue``: put
# it in as its status says.  ``activity``: keep the set of recovery's candidates (a run
# cancelled on request is never recovered, so it leaves the set).

SAVE = (
    _EXPIRED_FN
    + _QUEUE_FN
    + """
local old = redis.call('HMGET', KEYS[1], 'expires_at', 'queue', 'queue_entry',
  'lease_owner', 'lease_expires_at', 'wait_step', 'wait_key', 'wait_kind', 'wake_at')
-- An expired run is gone: its lease, its wait and its mailbox go with it.
local gone = redis.call('EXISTS', KEYS[1]) == 0 or (old[1] and expired(old[1], ARGV[2]))
unqueue(ARGV[5], ARGV[1], old[2], old[3])
redis.call('DEL', KEYS[1], KEYS[2])
if gone then redis.call('DEL', KEYS[5]) end
local i = 11
local fields = {}
while ARGV[i] ~= '--' do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  i = i + 2
end
local names = {'lease_owner', 'lease_expires_at', 'wait_step', 'wait_key', 'wait_kind',
  'wake_at'}
if not gone then
  for j = 1, 6 do
    if old[j + 3] then
      fields[#fields + 1] = names[j]
      fields[#fields + 1] = old[j + 3]
    end
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
activity(KEYS[4], ARGV[1], ARGV[4], ARGV[10], ARGV[2])
if ARGV[4] == 'waiting' and not gone and old[9] and tonumber(old[9]) then
  redis.call('ZADD', KEYS[6], old[9], ARGV[1])
else redis.call('ZREM', KEYS[6], ARGV[1]) end
requeue(ARGV[5], ARGV[1], ARGV[4], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
if ARGV[3] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
else redis.call('PERSIST', KEYS[5]) end
return 1
"""
)
"""Replace a run (``save``), keeping its stored lease, pending wait and mailbox unless it
had expired (they go with it then), and keeping its queue's keys in step.  KEYS: run,
steps, index, active, mailbox, waiting.  ARGV: id, now, ttl_ms (``''`` = none),
status, prefix, queue, queue_entry, priority, partition, cancel_at (``''`` = none
each), then the run's field/value pairs, ``--``, then the steps hash's field/value
pairs."""

READ = """
local run = redis.pcall('HGETALL', KEYS[1])
if run.err then return {0, run.err} end
if ARGV[1] == '' then return {run} end
local steps = redis.pcall('HGETALL', KEYS[2])
if steps.err then return {1, steps.err} end
return {run, steps}
"""
"""Read a run's hash and, with ARGV[1] ``'1'``, its steps hash, at once.  KEYS: run,
steps.  Returns ``{run pairs}`` or ``{run pairs, steps pairs}``, or ``{n, error}``
when KEYS[n + 1] could not be read (a key of another type)."""

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
written).  The queue fields are left out: absent, they read as none."""

FINISH = (
    _LIVE_FN
    + _QUEUE_FN
    + """
if not live(KEYS[1], ARGV[2]) then return 0 end
local run = redis.call('HMGET', KEYS[1], 'lease_owner', 'queue', 'queue_entry', 'cancel_at')
if ARGV[3] ~= '' and run[1] ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'result_json', ARGV[5], 'updated_at', ARGV[2],
  'expires_at', ARGV[6], 'lease_owner', '', 'lease_expires_at', '',
  'wait_step', '', 'wait_key', '', 'wait_kind', '', 'wake_at', '')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
activity(KEYS[4], ARGV[1], ARGV[4], run[4], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[1])
if ARGV[7] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  redis.call('PEXPIRE', KEYS[5], ARGV[7])
end
if run[2] and run[2] ~= '' then
  -- A queued run's handle may wait for its end in another process.
  unqueue(ARGV[8], ARGV[1], run[2], run[3])
  redis.call('PUBLISH', ARGV[9], '=' .. ARGV[1])
end
return 1
"""
)
"""Record the end of a run whose metadata does not change, clearing its lease and its
pending wait; a queued run leaves its queue's keys and its id is published.  KEYS:
run, steps, index, active, mailbox, waiting.  ARGV: id, now, owner (``''`` = any),
status, result JSON, expires_at, ttl_ms, prefix, the wake-up channel.  Returns 1
(done), 0 (no such live run), -1 (another owner holds the lease)."""

RENEW = (
    _LIVE_FN
    + """
if not live(KEYS[1], ARGV[1]) then return 0 end
local run = redis.call('HMGET', KEYS[1], 'lease_owner', 'cancel_at')
if run[1] ~= ARGV[2] or (run[2] and run[2] ~= '') then return 0 end
redis.call('HSET', KEYS[1], 'lease_expires_at', ARGV[3])
return 1
"""
)
"""Extend a lease.  KEYS: run.  ARGV: now, owner, new lease_expires_at.  Returns 1 if
renewed, 0 if the run is gone, another owner (or none) holds it, or a cancel was
requested (the lease keeper then reads the run and stops it)."""

RELEASE = """
if redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_expires_at', '')
end
return 1
"""
"""Clear a lease if its holder is ``owner``.  KEYS: run.  ARGV: owner."""

DELETE = (
    _LIVE_FN
    + _QUEUE_FN
    + """
local kind = redis.call('TYPE', KEYS[1])['ok']
local was = kind ~= 'none'
if kind == 'hash' then
  if redis.call('HEXISTS', KEYS[1], 'expires_at') == 1 then was = live(KEYS[1], ARGV[2]) end
  local run = redis.call('HMGET', KEYS[1], 'queue', 'queue_entry')
  unqueue(ARGV[3], ARGV[1], run[1], run[2])
  if run[1] and run[1] ~= '' then redis.call('ZREM', ARGV[3] .. 'qstart:' .. run[1], ARGV[1]) end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
if was then return 1 end
return 0
"""
)
"""Remove a run, its steps, its mailbox and its index entries (its queue's too).
KEYS: run, steps, index, active, mailbox, waiting.  ARGV: id, now, prefix.  Returns 1
if a live run was deleted (a run key that is not a hash, a damaged run, counts as
one), else 0."""

SEND = (
    _EXPIRED_FN
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'status', 'wait_key', 'wake_at')
if expired(run[1], ARGV[1]) then return 0 end
if run[2] == 'completed' or run[2] == 'failed' then return run[2] end
if ARGV[4] ~= '' then
  local head = redis.call('HGET', KEYS[3], '\\0h' .. ARGV[2]) or '1'
  if redis.call('HEXISTS', KEYS[3], ARGV[2] .. '\\0' .. head) == 1
    or redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 2 end
end
local n = redis.call('HINCRBY', KEYS[3], '\\0t' .. ARGV[2], 1)
redis.call('HSET', KEYS[3], ARGV[2] .. '\\0' .. n, ARGV[3], '\\0s' .. ARGV[2] .. '\\0' .. n,
  ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
if run[2] == 'waiting' and run[3] == ARGV[2] then
  -- Due now, unless its deadline came first (a value sent after it loses to it).
  local wake = tonumber(run[4] or '')
  if not wake or tonumber(ARGV[1]) < wake then
    redis.call('HSET', KEYS[1], 'wake_at', ARGV[1])
    redis.call('ZADD', KEYS[4], ARGV[1], ARGV[5])
  end
end
redis.call('PUBLISH', ARGV[6], '=' .. ARGV[5])
return 1
"""
)
"""Append a message to a run's mailbox (with the time it was sent) and wake its
waiters.  KEYS: run, steps, mailbox, waiting.  ARGV: now, key, value JSON, once (a
step key; ``''`` = none), id, the wake-up channel.  Returns 1 (sent), 0 (no such live
run), 2 (``once`` refused: a message with the key is pending or the step is
recorded), or the status of a run that ended (``completed``, ``failed``).  A run
waiting for the key becomes due (``wake_at = min(wake_at, now)``); the id is
published on the channel."""

RECEIVE = (
    _EXPIRED_FN
    + _DONE_WAITING
    + _MAIL_FN
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'lease_owner', 'wait_step', 'status')
if expired(run[1], ARGV[1]) then return 0 end
if ARGV[2] ~= '' and run[2] ~= ARGV[2] then return -1 end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 2 end
local n, value = first_sent(KEYS[3], ARGV[3], ARGV[7])
if not n then return 2 end
take(KEYS[3], ARGV[3], n)
if redis.call('HSET', KEYS[2], ARGV[4], ARGV[5] .. value .. ARGV[6]) == 1 then
  redis.call('HSET', KEYS[2], '\\0' .. ARGV[4], redis.call('HINCRBY', KEYS[2], '\\0', 1))
end
if run[3] == ARGV[4] then
  done_waiting(KEYS[1], run[4], ARGV[8], ARGV[1], KEYS[4], KEYS[5])
end
return value
"""
)
"""Take a run's oldest pending message with a key (sent at or before ``sent_by``) into a
step: delete it and record the step as ``head .. value .. tail`` (a new step goes
last), clearing the run's wait if it is the step's: the whole receive in one round
trip.  KEYS: run, steps, mailbox, waiting, active.  ARGV: now, owner (``''`` = any),
key, step, head, tail, sent_by (``''`` = any), id.  Returns the value JSON (a
string), 2 (none pending, or the step is recorded already: nothing written), 0 (no
such live run) or -1 (another owner holds the lease)."""

BEGIN_WAIT = (
    _EXPIRED_FN
    + _MAIL_FN
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'lease_owner', 'wait_step', 'wake_at')
if expired(run[1], ARGV[1]) then return {0, ''} end
if ARGV[2] ~= '' and run[2] ~= ARGV[2] then return {-1, ''} end
local resumed = run[3] == ARGV[3]
local wake = ARGV[6]
if resumed then
  -- The same wait, resumed: its deadline stays.
  wake = run[4] or ''
  if not tonumber(wake) then wake = '' end
end
if ARGV[4] ~= '' and first_sent(KEYS[2], ARGV[4], wake) then return {1, ''} end
redis.call('ZREM', KEYS[4], ARGV[7])
if resumed then
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
none), id.  Returns ``{code, wake_at}``: code 1 (a message with the key is pending,
sent at or before the deadline - the stored one for a resumed wait: nothing
written), 2 (waiting until ``wake_at``, ``''`` = no deadline; a resumed wait keeps
its stored one), 0 (no such live run) or -1 (another owner holds the lease)."""

ENQUEUE = (
    _EXPIRED_FN
    + _QUEUE_FN
    + """
local old = redis.call('HMGET', KEYS[1], 'expires_at', 'queue', 'queue_entry')
if redis.call('EXISTS', KEYS[1]) == 1 and not (old[1] and expired(old[1], ARGV[2])) then
  return redis.call('HGETALL', KEYS[1])
end
unqueue(ARGV[3], ARGV[1], old[2], old[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
requeue(ARGV[3], ARGV[1], 'pending', ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if ARGV[9] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[9]) end
redis.call('PUBLISH', ARGV[4], '=' .. ARGV[1])
return 1
"""
)
"""Store a queued run if there is no live run with its id (an expired one is replaced,
its steps and messages dropped) and publish its id.  KEYS: run, steps, mailbox,
index, active, waiting.  ARGV: id, now, prefix, the wake-up channel, queue,
queue_entry, priority, partition, ttl_ms (``''`` = none), then the run's
field/value pairs.  Returns 1 (stored) or the live run's hash as field/value pairs
(nothing written)."""

CLAIM_QUEUED = (
    _EXPIRED_FN
    + """
local now, owner, lease_until = ARGV[1], ARGV[2], ARGV[3]
local limit = tonumber(ARGV[4])
local cap, pcap = tonumber(ARGV[5]), tonumber(ARGV[6])
local rate, cutoff = tonumber(ARGV[7]), ARGV[8]
local prefix, queue = ARGV[9], ARGV[10]
-- ARGV[12]: '1' when only the workflows named from ARGV[13] on are taken.
local wanted = nil
if ARGV[12] == '1' then
  wanted = {}
  for i = 13, #ARGV do wanted[ARGV[i]] = true end
end
-- Starts older than the window count for no cap: forget them.  Without a rate cap,
-- the window the queue's last rate cap gave.
if cutoff ~= '' then redis.call('HSET', KEYS[6], queue, ARGV[11])
else
  local window = tonumber(redis.call('HGET', KEYS[6], queue) or '')
  if window then cutoff = string.format('%.17g', tonumber(now) - window) end
end
if cutoff ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff) end
if rate then
  local room = rate - redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[8], '+inf')
  if room < limit then limit = room end
end
local parts = {}
if cap or pcap then
  -- Count the started runs that still run (a run that ended, expired or was deleted
  -- meanwhile leaves the hash here; a waiting one stays but does not count).
  local running = 0
  local started = redis.call('HGETALL', KEYS[2])
  for i = 1, #started, 2 do
    local id, part = started[i], started[i + 1]
    local r = redis.pcall('HMGET', prefix .. 'run:' .. id, 'status', 'expires_at', 'queue')
    if r.err or expired(r[2], now) or r[3] ~= queue
      or (r[1] ~= 'running' and r[1] ~= 'waiting') then
      redis.call('HDEL', KEYS[2], id)
    elseif r[1] == 'running' then
      running = running + 1
      parts[part] = (parts[part] or 0) + 1
    end
  end
  if cap and cap - running < limit then limit = cap - running end
end
local taken, drop = {}, {}
local count, offset = 0, 0
while count < limit do
  local batch = redis.call('ZRANGE', KEYS[1], offset, offset + 99)
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    if count >= limit then break end
    local id = string.sub(entry, 18)
    local key = prefix .. 'run:' .. id
    local r = redis.pcall('HMGET', key, 'status', 'expires_at', 'queue', 'queue_entry',
      'partition', 'cancel_at', 'workflow_name')
    if r.err or r[1] ~= 'pending' or expired(r[2], now) or r[3] ~= queue or r[4] ~= entry
      or (r[6] and r[6] ~= '') then
      drop[#drop + 1] = entry  -- not a pending run of this queue any more
    elseif wanted and not wanted[r[7] or ''] then
      -- Another workflow's: left for a worker that has it.
    else
      local part = r[5] or ''
      if not pcap or (parts[part] or 0) < pcap then
        parts[part] = (parts[part] or 0) + 1
        drop[#drop + 1] = entry
        redis.call('HSET', key, 'status', 'running', 'lease_owner', owner,
          'lease_expires_at', lease_until, 'started_at', now, 'updated_at', now)
        redis.call('ZADD', KEYS[4], now, id)
        redis.call('ZADD', KEYS[5], now, id)
        redis.call('HSET', KEYS[2], id, part)
        redis.call('ZADD', KEYS[3], now, id)
        count = count + 1
        taken[#taken + 1] = id
        taken[#taken + 1] = redis.call('HGETALL', key)
      end
    end
  end
  offset = offset + 100
end
for i = 1, #drop, 1000 do
  redis.call('ZREM', KEYS[1], unpack(drop, i, math.min(i + 999, #drop)))
end
return taken
"""
)
"""Start up to ``limit`` pending runs of a queue, lowest priority number first (then
oldest, then by id), within the caps, counting the runs taken here; every status
change of the queue's runs happens in scripts, so this one sees them all.  KEYS: the
queue's pending set, started hash, starts set, index, active, the rate windows hash.
ARGV: now, owner, lease_expires_at, limit, concurrency, partition_concurrency, rate
count (``''`` = none each), the rate cutoff (``now - window``; ``''`` = none), prefix,
queue, the rate window, ``'1'`` if only some workflows are taken (``''``: any), then
their names.  Returns ``{id, run hash pairs, ...}`` for the runs taken, in order."""

REQUEST_CANCEL = (
    _EXPIRED_FN
    + _QUEUE_FN
    + """
local run = redis.call('HMGET', KEYS[1], 'expires_at', 'status', 'queue', 'queue_entry')
if redis.call('EXISTS', KEYS[1]) == 0 or (run[1] and expired(run[1], ARGV[1])) then
  return 0
end
local status = run[2] or ''
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return {status}
end
if status == 'pending' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancel_at', ARGV[1],
    'updated_at', ARGV[1])
  unqueue(ARGV[3], ARGV[2], run[3], run[4])
  redis.call('ZADD', KEYS[4], ARGV[1], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
elseif status == 'waiting' then
  redis.call('HSET', KEYS[1], 'cancel_at', ARGV[1], 'wake_at', ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], 'cancel_at', ARGV[1])
end
redis.call('PUBLISH', ARGV[4], '!' .. ARGV[2])
return status
"""
)
"""Ask a run to stop: a pending one is cancelled at once (it never starts), a running
or waiting one gets ``cancel_at`` (a waiting one is due at once).  KEYS: run,
waiting, active, index.  ARGV: now, id, prefix, the wake-up channel.  Returns the
status the run had (and publishes ``!`` + its id), 0 (no such live run) or ``{status}`` for
a run that ended (nothing written)."""

NOTIFY = """
redis.call('PUBLISH', KEYS[1], '=' .. ARGV[1])
return 1
"""
"""Publish a run's id (``=`` first: a change, not a cancel request).  KEYS: the wake-up
channel.  ARGV: id."""

END_ORPHANED_CANCEL = (
    _LIVE_FN
    + _QUEUE_FN
    + """
if not live(KEYS[1], ARGV[2]) then return 0 end
local run = redis.call('HMGET', KEYS[1], 'status', 'cancel_at', 'lease_expires_at', 'queue',
  'queue_entry')
if (run[1] ~= 'running' and run[1] ~= 'waiting') or (run[2] or '') == '' then return 0 end
local lease = run[3] or ''
if lease ~= '' and not (tonumber(lease) and tonumber(lease) <= tonumber(ARGV[2])) then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated_at', ARGV[2],
  'lease_owner', '', 'lease_expires_at', '',
  'wait_step', '', 'wait_key', '', 'wait_kind', '', 'wake_at', '')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if run[4] and run[4] ~= '' then
  -- A queued run's handle may wait for its end in another process.
  unqueue(ARGV[3], ARGV[1], run[4], run[5])
  redis.call('PUBLISH', ARGV[4], '=' .. ARGV[1])
end
return 1
"""
)
"""End a run asked to cancel whose worker died before it stopped it: if it is still
running or waiting with ``cancel_at`` set and its lease free or run out, it becomes
``cancelled`` (lease and wait cleared, ``updated_at`` now), leaves the recovery
candidates and, when queued, its queue's keys (its end published).  KEYS: run,
index, active, waiting.  ARGV: id, now, prefix, the wake-up channel.  Returns 1 if it
ended it, else 0."""

PUT_SCHEDULE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
"""Store a schedule's spec (its last tick stays).  KEYS: specs, ticks.  ARGV: name, spec
JSON."""

SCHEDULES = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""
"""Every schedule, read at once.  KEYS: specs, ticks.  Returns ``{spec pairs, tick
pairs}``."""

DELETE_SCHEDULE = """
local was = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return was
"""
"""Delete a schedule.  KEYS: specs, ticks.  ARGV: name.  Returns 1 if it was there."""

ADVANCE_SCHEDULE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local tick = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if tick ~= ARGV[2] and (tonumber(tick) == nil or tonumber(tick) ~= tonumber(ARGV[2])) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""
"""Move a schedule's last tick from ``expected`` to ``tick`` if it is still
``expected``.  KEYS: specs, ticks.  ARGV: name, expected (``''`` = none), tick.
Returns 1 if moved, 0 if the tick differs or the schedule is gone."""

# ---- the cross-run step cache ------------------------------------------------------------

CACHE_GET = """
local found = redis.pcall('HMGET', KEYS[1], 'v', 'e')
if found.err then return {0, found.err} end
return {1, found[1] or false, found[2] or false}
"""
"""Read a cache entry (a hash: ``v`` its value JSON, ``e`` its expiry).  KEYS: the
entry.  Returns ``{1, value, expiry}`` (nil each when absent) or ``{0, error}`` for a
key of another type."""

CACHE_PUT = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
"""Write a cache entry over whatever the key held.  KEYS: the entry.  ARGV: value JSON,
expires_at, the ``PEXPIRE`` (ms) that lets Redis free it then."""

CACHE_DELETE = """
local e = redis.pcall('HGET', KEYS[1], 'e')
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
if type(e) ~= 'string' or tonumber(e) == nil then return 1 end
if tonumber(e) > tonumber(ARGV[1]) then return 1 end
return 0
"""
"""Delete a cache entry.  KEYS: the entry.  ARGV: now.  Returns 1 if a live one (or one
that cannot be read) was there, else 0."""

CACHE_PURGE = """
local e = redis.pcall('HGET', KEYS[1], 'e')
if type(e) == 'string' and tonumber(e) ~= nil and tonumber(e) <= tonumber(ARGV[1]) then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
"""Delete a cache entry if it expired (checked and deleted at once: a fresh entry
written meanwhile stays).  KEYS: the entry.  ARGV: now.  Returns 1 if it went."""

COUNT = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[3], ARGV[4])
local now, want = tonumber(ARGV[2]), ARGV[5]
local counts, out = {}, {#members}
for _, id in ipairs(members) do
  if want == '' or string.sub(id, 1, #want) == want then
    local got = redis.pcall('HMGET', ARGV[1] .. 'run:' .. id, 'status', 'expires_at')
    if got[1] then
      local exp = got[2]
      local at = exp and tonumber(exp)
      if not exp or exp == '' or at == nil or at > now then
        counts[got[1]] = (counts[got[1]] or 0) + 1
      end
    end
  end
end
for status, n in pairs(counts) do
  out[#out + 1] = status
  out[#out + 1] = n
end
return out
"""
"""Count by status the live runs of one slice of the index (ranks ``ARGV[3]`` to
``ARGV[4]``), reading only each run's ``status`` and ``expires_at`` (a damaged expiry
counts as live, as everywhere).  KEYS: the index.  ARGV: the key prefix, now, first
rank, last rank, the id prefix (``''``: every run).  Returns how many index entries
the slice held, then ``status, count`` pairs.  A run gone from under its entry, and a
key that is not a hash (``HMGET`` fails: no status), are not counted."""
