"""The SQL text of the SQLite store, kept apart from the driver that runs it.

Parameters are ``?`` placeholders; the order of each statement's parameters is
given beside it.  ``LIVE`` is the condition "not expired at ``?`` (now)".
"""

from __future__ import annotations

SCHEMA_VERSION = 5
"""The version of the tables this release creates and reads: a file of an older
version is upgraded when opened, a newer one is refused."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS awaitly_runs (
    id TEXT PRIMARY KEY NOT NULL,
    workflow_name TEXT NOT NULL,
    status TEXT NOT NULL,
    result_json TEXT,
    metadata_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL,
    format_version INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at REAL,
    wait_step TEXT,
    wait_key TEXT,
    wait_kind TEXT,
    wake_at REAL,
    queue TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    partition_key TEXT,
    started_at REAL,
    cancel_at REAL
);
CREATE INDEX IF NOT EXISTS awaitly_runs_by_update ON awaitly_runs (updated_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS awaitly_runs_by_expiry ON awaitly_runs (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS awaitly_runs_due ON awaitly_runs (wake_at)
    WHERE status = 'waiting' AND wake_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS awaitly_steps (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    record_json TEXT NOT NULL,
    seq INTEGER,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS awaitly_steps_in_order ON awaitly_steps (run_id, seq);
CREATE TABLE IF NOT EXISTS awaitly_messages (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value_json TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS awaitly_messages_in_order ON awaitly_messages (run_id, key, seq);
CREATE INDEX IF NOT EXISTS awaitly_runs_queued ON awaitly_runs (queue, priority, created_at, id)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS awaitly_runs_queue_running ON awaitly_runs (queue, partition_key)
    WHERE status = 'running' AND queue IS NOT NULL;
CREATE INDEX IF NOT EXISTS awaitly_runs_queue_started ON awaitly_runs (queue, started_at)
    WHERE started_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS awaitly_schedules (
    name TEXT PRIMARY KEY NOT NULL,
    spec_json TEXT NOT NULL,
    last_tick REAL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS awaitly_cache (
    key TEXT PRIMARY KEY NOT NULL,
    value_json TEXT NOT NULL,
    stored_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS awaitly_cache_by_expiry ON awaitly_cache (expires_at);
"""

# Version 2: steps keep the order they were recorded in (``seq``, per run).  Steps of a
# version 1 database have none (NULL): they come first, by key.
MIGRATE_1_TO_2 = """
ALTER TABLE awaitly_steps ADD COLUMN seq INTEGER;
CREATE INDEX IF NOT EXISTS awaitly_steps_in_order ON awaitly_steps (run_id, seq);
"""

# Version 3: durable waiting.  A run's pending wait (four columns, NULL in every run of
# a version 2 database: none waits), the index the sweep of due waits reads, and the
# mailboxes (a message's ``seq`` orders it: a new one is numbered after every other).
MIGRATE_2_TO_3 = """
ALTER TABLE awaitly_runs ADD COLUMN wait_step TEXT;
ALTER TABLE awaitly_runs ADD COLUMN wait_key TEXT;
ALTER TABLE awaitly_runs ADD COLUMN wait_kind TEXT;
ALTER TABLE awaitly_runs ADD COLUMN wake_at REAL;
CREATE INDEX IF NOT EXISTS awaitly_runs_due ON awaitly_runs (wake_at)
    WHERE status = 'waiting' AND wake_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS awaitly_messages (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value_json TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS awaitly_messages_in_order ON awaitly_messages (run_id, key, seq);
"""

# Version 4: queues, run control and schedules (issue 20).  Five run columns (NULL, or
# priority 0, in every run of a version 3 database: none is queued), the indexes
# claim_queued reads (pending runs of a queue in order; running runs and recent starts
# of a queue, counted without a scan of all runs) and the schedules.
MIGRATE_3_TO_4 = """
ALTER TABLE awaitly_runs ADD COLUMN queue TEXT;
ALTER TABLE awaitly_runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE awaitly_runs ADD COLUMN partition_key TEXT;
ALTER TABLE awaitly_runs ADD COLUMN started_at REAL;
ALTER TABLE awaitly_runs ADD COLUMN cancel_at REAL;
CREATE INDEX IF NOT EXISTS awaitly_runs_queued ON awaitly_runs (queue, priority, created_at, id)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS awaitly_runs_queue_running ON awaitly_runs (queue, partition_key)
    WHERE status = 'running' AND queue IS NOT NULL;
CREATE INDEX IF NOT EXISTS awaitly_runs_queue_started ON awaitly_runs (queue, started_at)
    WHERE started_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS awaitly_schedules (
    name TEXT PRIMARY KEY NOT NULL,
    spec_json TEXT NOT NULL,
    last_tick REAL,
    updated_at REAL NOT NULL
);
"""

# Version 5: the cross-run step cache (issue 22), a table of its own (runs are kept as
# they are).
MIGRATE_4_TO_5 = """
CREATE TABLE IF NOT EXISTS awaitly_cache (
    key TEXT PRIMARY KEY NOT NULL,
    value_json TEXT NOT NULL,
    stored_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS awaitly_cache_by_expiry ON awaitly_cache (expires_at);
"""

MIGRATIONS = {
    0: SCHEMA,
    1: MIGRATE_1_TO_2 + MIGRATE_2_TO_3 + MIGRATE_3_TO_4 + MIGRATE_4_TO_5,
    2: MIGRATE_2_TO_3 + MIGRATE_3_TO_4 + MIGRATE_4_TO_5,
    3: MIGRATE_3_TO_4 + MIGRATE_4_TO_5,
    4: MIGRATE_4_TO_5,
}
"""The script that brings a database of each older version to `SCHEMA_VERSION`
(version 0: an empty file)."""

LIVE = "(expires_at IS NULL OR expires_at > ?)"

RUN_COLUMNS = (
    "workflow_name, status, result_json, metadata_json, created_at, updated_at, expires_at,"
    " format_version, lease_owner, lease_expires_at, wait_step, wait_key, wait_kind, wake_at,"
    " queue, priority, partition_key, started_at, cancel_at"
)
"""The columns of a `RunRow`, in its field order."""

# id, now
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM awaitly_runs WHERE id = ? AND {LIVE}"
# id, now
RUN_IS_LIVE = f"SELECT 1 FROM awaitly_runs WHERE id = ? AND {LIVE}"

# run id.  A run's steps in the order they were recorded (first recording; a step
# recorded again keeps its place).
STEPS_IN_ORDER = (
    "SELECT key, record_json FROM awaitly_steps WHERE run_id = ? ORDER BY seq IS NOT NULL, seq, key"
)

_UPSERT_RUN = (
    "INSERT INTO awaitly_runs (id, workflow_name, status, result_json, metadata_json,"
    " created_at, updated_at, expires_at, format_version, queue, priority, partition_key,"
    " started_at, cancel_at{columns})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?{marks})"
    " ON CONFLICT (id) DO UPDATE SET workflow_name = excluded.workflow_name,"
    " status = excluded.status, result_json = excluded.result_json,"
    " metadata_json = excluded.metadata_json, created_at = excluded.created_at,"
    " updated_at = excluded.updated_at, expires_at = excluded.expires_at,"
    " format_version = excluded.format_version, queue = excluded.queue,"
    " priority = excluded.priority, partition_key = excluded.partition_key,"
    " started_at = excluded.started_at, cancel_at = excluded.cancel_at{updates}"
)
_LEASE = ("lease_owner", "lease_expires_at")
_WAIT = ("wait_step", "wait_key", "wait_kind", "wake_at")


def _upsert(*extra: str) -> str:
    return _UPSERT_RUN.format(
        columns="".join(f", {name}" for name in extra),
        marks=", ?" * len(extra),
        updates="".join(f", {name} = excluded.{name}" for name in extra),
    )


# id, workflow_name, status, result_json, metadata_json, created_at, updated_at,
# expires_at, format_version, queue, priority, partition_key, started_at, cancel_at.
# Leaves the lease and wait columns as they are (a new run has neither).
UPSERT_RUN = _upsert()
# The same, then wait_step, wait_key, wait_kind, wake_at: writes the wait, keeps the lease.
UPSERT_RUN_WAIT = _upsert(*_WAIT)
# The same, then lease_owner, lease_expires_at, wait_step, wait_key, wait_kind, wake_at:
# writes every column.
UPSERT_RUN_ALL = _upsert(*_LEASE, *_WAIT)

# id, lease_owner, lease_expires_at
SET_LEASE = "UPDATE awaitly_runs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?"

# run id
DELETE_STEPS = "DELETE FROM awaitly_steps WHERE run_id = ?"
# run id
DELETE_MESSAGES = "DELETE FROM awaitly_messages WHERE run_id = ?"
# id
DELETE_RUN = "DELETE FROM awaitly_runs WHERE id = ?"

# run id, key, record_json, seq
INSERT_STEP = "INSERT INTO awaitly_steps (run_id, key, record_json, seq) VALUES (?, ?, ?, ?)"

# ?1 now, ?2 id, ?3 owner (or NULL), ?4 the step's key.  Touches a live run (held by
# owner, if one is given); when the run waits in step ?4, its wait is over: the wait
# columns are cleared and a waiting run runs again.  (SQLite computes every new value
# from the old row, so the order of the assignments does not matter.)
TOUCH_RUN = (
    "UPDATE awaitly_runs SET updated_at = ?1,"
    " status = CASE WHEN wait_step = ?4 AND status = 'waiting' THEN 'running' ELSE status END,"
    " wait_step = CASE WHEN wait_step = ?4 THEN NULL ELSE wait_step END,"
    " wait_key = CASE WHEN wait_step = ?4 THEN NULL ELSE wait_key END,"
    " wait_kind = CASE WHEN wait_step = ?4 THEN NULL ELSE wait_kind END,"
    " wake_at = CASE WHEN wait_step = ?4 THEN NULL ELSE wake_at END"
    " WHERE id = ?2 AND (expires_at IS NULL OR expires_at > ?1)"
    " AND (?3 IS NULL OR lease_owner = ?3)"
)

# run id, key, record_json, run id.  A new step goes after the run's others; one
# recorded again keeps its place.
UPSERT_STEP = (
    "INSERT INTO awaitly_steps (run_id, key, record_json, seq) VALUES (?, ?, ?,"
    " (SELECT coalesce(max(seq), 0) + 1 FROM awaitly_steps WHERE run_id = ?))"
    " ON CONFLICT (run_id, key) DO UPDATE SET record_json = excluded.record_json"
)

# run id, key
STEP_IS_RECORDED = "SELECT 1 FROM awaitly_steps WHERE run_id = ? AND key = ?"

# status, result_json, metadata_json, updated_at, expires_at, id.  Clears the lease
# and the pending wait.
END_RUN = (
    "UPDATE awaitly_runs SET status = ?, result_json = ?, metadata_json = ?,"
    " updated_at = ?, expires_at = ?, lease_owner = NULL, lease_expires_at = NULL,"
    " wait_step = NULL, wait_key = NULL, wait_kind = NULL, wake_at = NULL WHERE id = ?"
)

# until, id, owner, now.  Refused once a cancel was requested.
RENEW = (
    "UPDATE awaitly_runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?"
    f" AND cancel_at IS NULL AND {LIVE}"
)

# id, owner
RELEASE = (
    "UPDATE awaitly_runs SET lease_owner = NULL, lease_expires_at = NULL"
    " WHERE id = ? AND lease_owner = ?"
)

# now, now, now, then the workflow names (``{names}``: as many ``?`` as there are), then
# how many.  Abandoned runs and waiting runs that are due, oldest first.
ABANDONED = (
    f"SELECT id, {RUN_COLUMNS} FROM awaitly_runs WHERE {LIVE}"
    " AND (status IN ('running', 'cancelled')"
    " OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?))"
    " AND (lease_expires_at IS NULL OR lease_expires_at <= ?) AND cancel_at IS NULL{names}"
    " ORDER BY updated_at, id LIMIT ?"
)
ABANDONED_OF = " AND workflow_name IN ({marks})"
# ?1 now, ?2 how many.  Running or waiting runs asked to cancel whose lease is free or
# run out (their worker died before it stopped them) end ``cancelled``, oldest first.
END_ORPHANED_CANCELS = (
    "UPDATE awaitly_runs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,"
    " wait_step = NULL, wait_key = NULL, wait_kind = NULL, wake_at = NULL, updated_at = ?1"
    " WHERE id IN (SELECT id FROM awaitly_runs WHERE cancel_at IS NOT NULL"
    " AND status IN ('running', 'waiting') AND (expires_at IS NULL OR expires_at > ?1)"
    " AND (lease_expires_at IS NULL OR lease_expires_at <= ?1) ORDER BY updated_at, id LIMIT ?2)"
)

# ``{where}``: the conditions the listing asks for; its parameters, then how many.
LIST = (
    f"SELECT id, {RUN_COLUMNS} FROM awaitly_runs WHERE {{where}}"
    " ORDER BY updated_at DESC, id DESC LIMIT ?"
)
# prefix length, prefix.  substr, not LIKE: ids may hold any character, including % and _.
LIST_PREFIX = "substr(id, 1, ?) = ?"
# status
LIST_STATUS = "status = ?"
# at, at, id
LIST_AFTER = "(updated_at < ? OR (updated_at = ? AND id < ?))"

# ``{where}``: `LIVE`, and `LIST_PREFIX` when a prefix is given.
COUNT = "SELECT status, count(*) FROM awaitly_runs WHERE {where} GROUP BY status"

# now
PURGE_STEPS = (
    "DELETE FROM awaitly_steps WHERE run_id IN (SELECT id FROM awaitly_runs"
    " WHERE expires_at IS NOT NULL AND expires_at <= ?)"
)
# now
PURGE_MESSAGES = (
    "DELETE FROM awaitly_messages WHERE run_id IN (SELECT id FROM awaitly_runs"
    " WHERE expires_at IS NOT NULL AND expires_at <= ?)"
)
# now
PURGE_RUNS = "DELETE FROM awaitly_runs WHERE expires_at IS NOT NULL AND expires_at <= ?"

# ---- waiting: messages and waits --------------------------------------------------------

# run id, key, value_json, sent_at.  Numbered after every stored message.
INSERT_MESSAGE = (
    "INSERT INTO awaitly_messages (run_id, key, value_json, sent_at) VALUES (?, ?, ?, ?)"
)

# ?1 run id, ?2 key, ?3 sent_by (or NULL).  The oldest pending message with the key sent
# at or before sent_by: its seq and value.
OLDEST_MESSAGE = (
    "SELECT seq, value_json FROM awaitly_messages WHERE run_id = ?1 AND key = ?2"
    " AND (?3 IS NULL OR sent_at <= ?3) ORDER BY seq LIMIT 1"
)
# ?1 run id, ?2 key, ?3 deadline (or NULL).  Whether a message with the key sent at or
# before the deadline is pending.
MESSAGE_IS_PENDING = (
    "SELECT 1 FROM awaitly_messages WHERE run_id = ?1 AND key = ?2"
    " AND (?3 IS NULL OR sent_at <= ?3) LIMIT 1"
)
# id, now.  Whether run id is stored but expired at now (a write over it starts afresh).
RUN_IS_EXPIRED = (
    "SELECT 1 FROM awaitly_runs WHERE id = ? AND expires_at IS NOT NULL AND expires_at <= ?"
)
# seq
DELETE_MESSAGE = "DELETE FROM awaitly_messages WHERE seq = ?"

# run id, key (a message's), run id, key (a step's).  Whether a message with the key is
# pending or the step is recorded (a ``send`` with ``once`` is refused then).
ALREADY_SENT = (
    "SELECT EXISTS (SELECT 1 FROM awaitly_messages WHERE run_id = ? AND key = ?)"
    " OR EXISTS (SELECT 1 FROM awaitly_steps WHERE run_id = ? AND key = ?)"
)

# ?1 now, ?2 id.  A message for the key the run waits for has come: the wait is due,
# unless its deadline already passed (then that deadline stays: min).
WAKE_NOW = "UPDATE awaitly_runs SET wake_at = min(coalesce(wake_at, ?1), ?1) WHERE id = ?2"

# id.  The same wait, resumed: the stored wait is kept.
WAIT_AGAIN = "UPDATE awaitly_runs SET status = 'waiting' WHERE id = ?"

# wait_step, wait_key, wait_kind, wake_at, updated_at, id.  A new wait.
BEGIN_WAIT = (
    "UPDATE awaitly_runs SET status = 'waiting', wait_step = ?, wait_key = ?, wait_kind = ?,"
    " wake_at = ?, updated_at = ? WHERE id = ?"
)

# ---- queues, control and schedules ------------------------------------------------------

# ?1 queue, ?2 now.  The queue's pending runs that may start, in the order they start.
QUEUED = (
    f"SELECT id, {RUN_COLUMNS} FROM awaitly_runs WHERE queue = ?1 AND status = 'pending'"
    " AND cancel_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)"
    " ORDER BY priority, created_at, id"
)
# ?1 queue, ?2 now.  The queue's running runs, counted per partition.
QUEUE_RUNNING = (
    "SELECT partition_key, count(*) FROM awaitly_runs WHERE queue = ?1 AND status = 'running'"
    " AND (expires_at IS NULL OR expires_at > ?2) GROUP BY partition_key"
)
# ?1 queue, ?2 since.  How many of the queue's runs started after ``since``.
QUEUE_STARTS = "SELECT count(*) FROM awaitly_runs WHERE queue = ?1 AND started_at > ?2"
# owner, until, now (started_at), now (updated_at), id.  A queued run starts.
START_QUEUED = (
    "UPDATE awaitly_runs SET status = 'running', lease_owner = ?, lease_expires_at = ?,"
    " started_at = ?, updated_at = ? WHERE id = ?"
)
# now, id.  A pending run is cancelled: it never starts.
CANCEL_PENDING = (
    "UPDATE awaitly_runs SET status = 'cancelled', cancel_at = ?1, updated_at = ?1 WHERE id = ?2"
)
# now, id.  A running run is asked to stop.
CANCEL_RUNNING = "UPDATE awaitly_runs SET cancel_at = ?1 WHERE id = ?2"
# now, id.  A waiting run is asked to stop, and due at once (the sweep finds it).
CANCEL_WAITING = "UPDATE awaitly_runs SET cancel_at = ?1, wake_at = ?1 WHERE id = ?2"

# name, spec_json, now.  A new schedule, or a new spec for one (its last tick stays).
PUT_SCHEDULE = (
    "INSERT INTO awaitly_schedules (name, spec_json, last_tick, updated_at) VALUES (?, ?, NULL, ?)"
    " ON CONFLICT (name) DO UPDATE SET spec_json = excluded.spec_json,"
    " updated_at = excluded.updated_at"
)
SCHEDULES = "SELECT name, spec_json, last_tick FROM awaitly_schedules ORDER BY name"
# name
DELETE_SCHEDULE = "DELETE FROM awaitly_schedules WHERE name = ?"
# ?1 tick, ?2 name, ?3 expected (or NULL).  Compare and set (``IS`` matches NULL too).
ADVANCE_SCHEDULE = "UPDATE awaitly_schedules SET last_tick = ?1 WHERE name = ?2 AND last_tick IS ?3"

# ---- the cross-run step cache ------------------------------------------------------------

# key.  The entry's value and expiry (the driver compares it: a damaged one is reported).
CACHE_GET = "SELECT value_json, expires_at FROM awaitly_cache WHERE key = ?"

# key, value_json, now, expires_at.
CACHE_PUT = (
    "INSERT INTO awaitly_cache (key, value_json, stored_at, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value_json = excluded.value_json,"
    " stored_at = excluded.stored_at, expires_at = excluded.expires_at"
)

# key.
CACHE_DELETE = "DELETE FROM awaitly_cache WHERE key = ?"

# now.  Entries whose expiry passed (a damaged, non-numeric one is left to be reported).
CACHE_PURGE = (
    "DELETE FROM awaitly_cache WHERE typeof(expires_at) IN ('real', 'integer') AND expires_at <= ?"
)
