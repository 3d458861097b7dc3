"""The SQL text of the SQLite store, kept apart from the driver that runs it.

Parameters are ``?`` placeholders; the order of each statement's parameters is
given beside it.  ``LIVE`` is the condition "not expired at ``?`` (now)".
"""

from __future__ import annotations

SCHEMA_VERSION = 2
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
    lease_expires_at REAL
);
CREATE INDEX IF NOT EXISTS awaitly_runs_by_update ON awaitly_runs (updated_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS awaitly_runs_by_expiry ON awaitly_runs (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS awaitly_steps (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    record_json TEXT NOT NULL,
    seq INTEGER,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS awaitly_steps_in_order ON awaitly_steps (run_id, seq);
"""

# Version 2: steps keep the order they were recorded in (``seq``, per run).  Steps of a
# version 1 database have none (NULL): they come first, by key.
MIGRATE_1_TO_2 = """
ALTER TABLE awaitly_steps ADD COLUMN seq INTEGER;
CREATE INDEX IF NOT EXISTS awaitly_steps_in_order ON awaitly_steps (run_id, seq);
"""

LIVE = "(expires_at IS NULL OR expires_at > ?)"

RUN_COLUMNS = (
    "workflow_name, status, result_json, metadata_json, created_at, updated_at, expires_at,"
    " format_version, lease_owner, lease_expires_at"
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

# id, workflow_name, status, result_json, metadata_json, created_at, updated_at,
# expires_at, format_version.  Leaves the lease columns as they are.
UPSERT_RUN = (
    "INSERT INTO awaitly_runs (id, workflow_name, status, result_json, metadata_json,"
    " created_at, updated_at, expires_at, format_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET workflow_name = excluded.workflow_name,"
    " status = excluded.status, result_json = excluded.result_json,"
    " metadata_json = excluded.metadata_json, created_at = excluded.created_at,"
    " updated_at = excluded.updated_at, expires_at = excluded.expires_at,"
    " format_version = excluded.format_version"
)

# id, lease_owner, lease_expires_at
SET_LEASE = "UPDATE awaitly_runs SET lease_owner = ?, lease_expires_at = ? WHERE id = ?"

# run id
DELETE_STEPS = "DELETE FROM awaitly_steps WHERE run_id = ?"
# id
DELETE_RUN = "DELETE FROM awaitly_runs WHERE id = ?"

# run id, key, record_json, seq
INSERT_STEP = "INSERT INTO awaitly_steps (run_id, key, record_json, seq) VALUES (?, ?, ?, ?)"

# now, id, now, owner, owner.  Touches a live run (held by owner, if one is given).
TOUCH_RUN = (
    f"UPDATE awaitly_runs SET updated_at = ? WHERE id = ? AND {LIVE}"
    " AND (? IS NULL OR lease_owner = ?)"
)

# run id, key, record_json, run id.  A new step goes after the run's others; one
# recorded again keeps its place.
UPSERT_STEP = (
    "INSERT INTO awaitly_steps (run_id, key, record_json, seq) VALUES (?, ?, ?,"
    " (SELECT coalesce(max(seq), 0) + 1 FROM awaitly_steps WHERE run_id = ?))"
    " ON CONFLICT (run_id, key) DO UPDATE SET record_json = excluded.record_json"
)

# status, result_json, metadata_json, updated_at, expires_at, id
END_RUN = (
    "UPDATE awaitly_runs SET status = ?, result_json = ?, metadata_json = ?,"
    " updated_at = ?, expires_at = ?, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?"
)

# until, id, owner, now
RENEW = f"UPDATE awaitly_runs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND {LIVE}"

# id, owner
RELEASE = (
    "UPDATE awaitly_runs SET lease_owner = NULL, lease_expires_at = NULL"
    " WHERE id = ? AND lease_owner = ?"
)

# now, now, then the workflow names (``{names}``: as many ``?`` as there are), then how
# many.  Abandoned runs, oldest first.
ABANDONED = (
    f"SELECT id, {RUN_COLUMNS} FROM awaitly_runs WHERE {LIVE}"
    " AND status IN ('running', 'cancelled')"
    " AND (lease_expires_at IS NULL OR lease_expires_at <= ?){names}"
    " ORDER BY updated_at, id LIMIT ?"
)
ABANDONED_OF = " AND workflow_name IN ({marks})"

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

# now
PURGE_STEPS = (
    "DELETE FROM awaitly_steps WHERE run_id IN (SELECT id FROM awaitly_runs"
    " WHERE expires_at IS NOT NULL AND expires_at <= ?)"
)
# now
PURGE_RUNS = "DELETE FROM awaitly_runs WHERE expires_at IS NOT NULL AND expires_at <= ?"
