"""Versioned schema migrations, applied in order at open; ``PRAGMA user_version`` records the last.

Never edit a released migration: append a new one.  Each runs in one transaction
with the version bump, so a power cut leaves the schema at one version or the next.
"""
from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "jobs, their transitions, checkpoints, node facts",
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE jobs (
            id            TEXT PRIMARY KEY,
            name          TEXT NOT NULL,
            state         TEXT NOT NULL,
            pause_reason  TEXT,
            reason        TEXT NOT NULL DEFAULT '',
            version       INTEGER NOT NULL,
            priority      INTEGER NOT NULL DEFAULT 0,
            queue_seq     INTEGER NOT NULL,
            source        TEXT NOT NULL,
            file_path     TEXT,
            file_sha256   TEXT,
            file_bytes    INTEGER,
            deadline_s    REAL,
            created_s     REAL NOT NULL,
            updated_s     REAL NOT NULL,
            started_s     REAL,
            finished_s    REAL
        );
        CREATE INDEX jobs_by_state ON jobs(state, priority DESC, queue_seq);
        CREATE TABLE job_transitions (
            id          INTEGER PRIMARY KEY,
            job_id      TEXT NOT NULL REFERENCES jobs(id),
            from_state  TEXT,
            to_state    TEXT NOT NULL,
            pause_reason TEXT,
            reason      TEXT NOT NULL,
            version     INTEGER NOT NULL,
            t_s         REAL NOT NULL
        );
        CREATE INDEX job_transitions_by_job ON job_transitions(job_id, version);
        CREATE TABLE checkpoints (
            job_id       TEXT PRIMARY KEY REFERENCES jobs(id),
            t_s          REAL NOT NULL,
            byte_offset  INTEGER NOT NULL,
            line_number  INTEGER NOT NULL,
            data_json    TEXT NOT NULL
        );
        """,
    ),
    (
        2,
        "G-code analysis cache by file sha256; measured vs estimated prints for the learned correction",
        """
        CREATE TABLE gcode_analysis (
            file_sha256      TEXT NOT NULL,
            profile_key      TEXT NOT NULL,
            ambient_c        REAL NOT NULL,
            analysis_version INTEGER NOT NULL,
            created_s        REAL NOT NULL,
            result_json      TEXT NOT NULL,
            PRIMARY KEY (file_sha256, profile_key, ambient_c, analysis_version)
        );
        CREATE TABLE print_history (
            id              INTEGER PRIMARY KEY,
            job_id          TEXT,
            printer_profile TEXT NOT NULL,
            file_sha256     TEXT,
            estimated_s     REAL NOT NULL,
            measured_s      REAL NOT NULL,
            estimated_wh    REAL,
            measured_wh     REAL,
            finished_s      REAL NOT NULL
        );
        CREATE INDEX print_history_by_profile ON print_history(printer_profile, finished_s);
        """,
    ),
    (
        3,
        "power telemetry: raw samples (24 h), 1-minute means (30 days), 15-minute means (a year)",
        """
        CREATE TABLE telemetry_raw (
            t_s           REAL NOT NULL,
            source        TEXT NOT NULL,
            pv_w          REAL,
            pv_v          REAL,
            battery_v     REAL,
            battery_a     REAL,
            load_w        REAL,
            printer_w     REAL,
            soc_pct       REAL,
            charge_state  TEXT,
            error         TEXT,
            stale         INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX telemetry_raw_by_time ON telemetry_raw(t_s);
        CREATE TABLE telemetry_1m (
            t_s             REAL PRIMARY KEY,
            samples         INTEGER NOT NULL,
            pv_w            REAL,
            pv_v            REAL,
            battery_v       REAL,
            battery_v_min   REAL,
            battery_v_max   REAL,
            battery_a       REAL,
            load_w          REAL,
            printer_w       REAL,
            soc_pct         REAL,
            pv_wh           REAL NOT NULL DEFAULT 0,
            charge_wh       REAL NOT NULL DEFAULT 0,
            discharge_wh    REAL NOT NULL DEFAULT 0
        );
        CREATE TABLE telemetry_15m (
            t_s             REAL PRIMARY KEY,
            samples         INTEGER NOT NULL,
            pv_w            REAL,
            pv_v            REAL,
            battery_v       REAL,
            battery_v_min   REAL,
            battery_v_max   REAL,
            battery_a       REAL,
            load_w          REAL,
            printer_w       REAL,
            soc_pct         REAL,
            pv_wh           REAL NOT NULL DEFAULT 0,
            charge_wh       REAL NOT NULL DEFAULT 0,
            discharge_wh    REAL NOT NULL DEFAULT 0
        );
        """,
    ),
    (
        4,
        "sync: outbox, inbox (dedup), accepted hub sequence numbers, hub keys, file transfers",
        """
        CREATE TABLE sync_outbox (
            seq          INTEGER PRIMARY KEY AUTOINCREMENT,
            id           TEXT NOT NULL UNIQUE,
            kind         TEXT NOT NULL,
            coalesce_key TEXT,
            payload      BLOB NOT NULL,
            bytes        INTEGER NOT NULL,
            created_s    REAL NOT NULL,
            t0_s         REAL,
            samples      INTEGER NOT NULL DEFAULT 0,
            level        INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX sync_outbox_by_kind ON sync_outbox(kind, seq);
        CREATE INDEX sync_outbox_by_coalesce ON sync_outbox(coalesce_key);
        CREATE TABLE sync_inbox (
            msg_id      TEXT PRIMARY KEY,
            kind        TEXT NOT NULL,
            received_s  REAL NOT NULL,
            result      TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE sync_hub_seqs (
            seq         INTEGER PRIMARY KEY
        );
        CREATE TABLE sync_hub_keys (
            public_key  TEXT PRIMARY KEY,
            key_id      TEXT NOT NULL,
            added_s     REAL NOT NULL,
            retired     INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE sync_transfers (
            job_id       TEXT PRIMARY KEY,
            file_sha256  TEXT NOT NULL,
            total_bytes  INTEGER NOT NULL,
            done_bytes   INTEGER NOT NULL DEFAULT 0,
            part_path    TEXT NOT NULL,
            final_path   TEXT NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 1,
            started_s    REAL NOT NULL,
            updated_s    REAL NOT NULL
        )
        """,
    ),
    (
        5,
        "the forecast the planner learns from the node's own PV, one snapshot a day (a restart keeps it)",
        """
        CREATE TABLE learned_forecast (
            day         INTEGER PRIMARY KEY,
            saved_s     REAL NOT NULL,
            state_json  TEXT NOT NULL
        )
        """,
    ),
]
