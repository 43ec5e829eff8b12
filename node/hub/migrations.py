"""The hub ledger's schema, as numbered migrations written once for both backends.

Each migration is SQL in the common subset of SQLite and PostgreSQL with two spellings filled in
per dialect: ``{real}`` (SQLite ``REAL`` is 8 bytes; PostgreSQL's ``REAL`` is 4 bytes and would
round epoch seconds to minutes, so it becomes ``DOUBLE PRECISION``) and ``{bigint}``.  A backend
stores the version it reached (SQLite: ``PRAGMA user_version``, as ledgers before migrations
did; PostgreSQL: the ``ledger_schema`` table) and applies the rest in one transaction.
"""
from __future__ import annotations

DIALECT_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {"real": "REAL", "bigint": "INTEGER"},
    "postgresql": {"real": "DOUBLE PRECISION", "bigint": "BIGINT"},
}

#: version 1: the ledger of the single-process hub (every SQLite ledger made before migrations is at 1)
V1 = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id       TEXT PRIMARY KEY,
    online        INTEGER NOT NULL DEFAULT 0,
    last_seen_s   {real},
    soc_pct       {real},
    pv_w          {real},
    printer       TEXT,
    current_job   TEXT,
    percent       {real},
    next_window_start_s {real},
    next_window_end_s   {real},
    queue_length  INTEGER NOT NULL DEFAULT 0,
    capabilities  TEXT,
    seq           {bigint} NOT NULL DEFAULT 0,
    provisioned_s {real}
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    node_id       TEXT,
    requested_node TEXT,
    file_path     TEXT NOT NULL,
    file_sha256   TEXT NOT NULL,
    file_bytes    {bigint} NOT NULL,
    requirements  TEXT NOT NULL DEFAULT '{{}}',
    priority      INTEGER NOT NULL DEFAULT 0,
    deadline_s    {real},
    expires_s     {real} NOT NULL,
    energy_wh     {real},
    manifest      TEXT,
    hub_state     TEXT NOT NULL DEFAULT 'new',
    wire_state    TEXT NOT NULL DEFAULT 'QUEUED',
    node_state    TEXT,
    version       INTEGER NOT NULL DEFAULT 0,
    reason        TEXT NOT NULL DEFAULT '',
    created_s     {real} NOT NULL,
    updated_s     {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS job_events (
    job_id      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    node_state  TEXT NOT NULL,
    wire_state  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    t_s         {real} NOT NULL,
    msg_id      TEXT NOT NULL,
    PRIMARY KEY (job_id, version, node_state)
);
CREATE TABLE IF NOT EXISTS commands (
    command_id  TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    args        TEXT NOT NULL,
    signed      TEXT,
    expires_s   {real},
    created_s   {real} NOT NULL,
    sent        INTEGER NOT NULL DEFAULT 0,
    ok          INTEGER,
    detail      TEXT,
    answered_s  {real}
);
CREATE TABLE IF NOT EXISTS received (
    node_id  TEXT NOT NULL,
    msg_id   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    t_s      {real} NOT NULL,
    PRIMARY KEY (node_id, msg_id)
);
CREATE TABLE IF NOT EXISTS telemetry (
    node_id    TEXT NOT NULL,
    t_s        {real} NOT NULL,
    pv_w       {real},
    pv_v       {real},
    battery_v  {real},
    battery_a  {real},
    load_w     {real},
    printer_w  {real},
    soc_pct    {real},
    level      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, t_s)
);
CREATE TABLE IF NOT EXISTS job_records (
    job_id   TEXT PRIMARY KEY,
    node_id  TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    record   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    job_id   TEXT PRIMARY KEY,
    node_id  TEXT NOT NULL,
    percent  {real} NOT NULL,
    t_s      {real} NOT NULL
)
"""

#: version 2: several hub workers.  ``leases`` names which worker runs the pump (assign, sign, send)
#: until when; the index serves the dispatcher's queue count per node and the pump's scan of new jobs.
V2 = """
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_s  {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_node_state ON jobs (node_id, wire_state);
CREATE INDEX IF NOT EXISTS jobs_by_hub_state ON jobs (hub_state, wire_state)
"""

#: version 3: each node's place and array from its hello (NodeSite as JSON): the fleet map and the
#: hub's per-site forecasts read it.
V3 = """
ALTER TABLE nodes ADD COLUMN site TEXT
"""

#: version 4 (protocol 1.1): the minor version each node's hello says it speaks (the hub sends a forecast in
#: the form it understands) and its current job's version from ``state/printer`` (a Home Assistant pause
#: or resume names it)
V4 = """
ALTER TABLE nodes ADD COLUMN protocol_minor INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN job_version INTEGER
"""

#: version 5: what the fleet page and ``hub nodes`` show beyond SoC and PV: the battery voltage (power
#: document), the printer's temperatures, the state of the job it names and the printer's detail (printer
#: document), and when each job's progress last moved (``moved_s``: a print whose percent stands still is
#: stalled).
V5 = """
ALTER TABLE nodes ADD COLUMN battery_v {real};
ALTER TABLE nodes ADD COLUMN hotend_c {real};
ALTER TABLE nodes ADD COLUMN hotend_target_c {real};
ALTER TABLE nodes ADD COLUMN bed_c {real};
ALTER TABLE nodes ADD COLUMN bed_target_c {real};
ALTER TABLE nodes ADD COLUMN job_state TEXT;
ALTER TABLE nodes ADD COLUMN printer_detail TEXT;
ALTER TABLE nodes ADD COLUMN state_t_s {real};
ALTER TABLE progress ADD COLUMN moved_s {real}
"""

MIGRATIONS: tuple[str, ...] = (V1, V2, V3, V4, V5)
SCHEMA_VERSION = len(MIGRATIONS)


def statements(version: int, dialect: str) -> list[str]:
    """The statements of migration ``version`` (1-based) spelled for ``dialect``."""
    sql = MIGRATIONS[version - 1].format(**DIALECT_TYPES[dialect])
    return [s.strip() for s in sql.split(";") if s.strip()]
