-- Confidence drift (SPEC §4.3) and alerts (SPEC §5) — embedded SQLite store.
--
-- SQLite twin of ../0002_drift.sql; see 0001_init.sql for the type conventions: time
-- is INTEGER epoch ms in the tables (*_ms columns) and ISO-8601 UTC TEXT in the views
-- (day: 'YYYY-MM-DD'; event-time stamps: 'YYYY-MM-DDTHH:MM:SSZ'; processing-time
-- stamps: 'YYYY-MM-DDTHH:MM:SS.SSSZ').
--
-- Confidences are exact count histograms (1e-4 bins, tierwatch sparse format), one row
-- per (hour, partition, signal, classifier_version, router). A partition is written only
-- by its owner (fenced by tw_partitions.generation in the same transaction), so the
-- daemon merges a batch into the stored row by read-modify-write.

-- Decisions, distinct conversations (the effective sample size), decisions routed off the
-- capable tier and the thresholds in force, per hour and partition.
CREATE TABLE tw_conf_hist (
    hour_ms            INTEGER NOT NULL,   -- UTC hour start, epoch ms
    partition          INTEGER NOT NULL,
    signal             TEXT    NOT NULL,
    classifier_version TEXT    NOT NULL,
    router             TEXT    NOT NULL,
    n                  INTEGER NOT NULL,
    conversations      INTEGER NOT NULL,
    routed_cheap       INTEGER NOT NULL,
    threshold_sum      REAL    NOT NULL,
    threshold_n        INTEGER NOT NULL,
    hist               BLOB    NOT NULL,
    updated_at_ms      INTEGER NOT NULL
                       DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    PRIMARY KEY (hour_ms, partition, signal, classifier_version, router)
);
CREATE INDEX tw_conf_hist_updated ON tw_conf_hist (updated_at_ms);

-- Frozen reference distribution per classifier version and signal. psi_edges (int[] in
-- Postgres) is a JSON array of integers (bins of 1e-4), e.g. '[1234,2345,...]'; read it
-- with json_each(psi_edges) or decode it in the daemon.
CREATE TABLE tw_references (
    classifier_version TEXT    NOT NULL,
    signal             TEXT    NOT NULL,
    source             TEXT    NOT NULL,
    n                  INTEGER NOT NULL,
    n_eff              INTEGER NOT NULL,
    hist               BLOB    NOT NULL,
    psi_edges          TEXT    NOT NULL CHECK (json_valid(psi_edges) AND json_type(psi_edges) = 'array'),
    created_at_ms      INTEGER NOT NULL
                       DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    PRIMARY KEY (classifier_version, signal)
);

CREATE TABLE tw_drift_daily (
    day_ms               INTEGER NOT NULL,   -- UTC day start, epoch ms
    classifier_version   TEXT    NOT NULL,
    router               TEXT    NOT NULL,
    signal               TEXT    NOT NULL,
    "window"             TEXT    NOT NULL CHECK ("window" IN ('1d', '7d')),
    n                    INTEGER NOT NULL,
    n_eff                INTEGER NOT NULL,
    ref_n                INTEGER NOT NULL,
    ks_d                 REAL,
    ks_p                 REAL,
    psi                  REAL,
    psi_noise            REAL,
    cheap_share_expected REAL,
    cheap_share_observed REAL,
    status               TEXT    NOT NULL
                         CHECK (status IN ('ok', 'warning', 'critical', 'insufficient', 'no_reference')),
    evaluated_at_ms      INTEGER NOT NULL
                         DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    PRIMARY KEY (day_ms, classifier_version, router, signal, "window")
);

-- Daily and rolling 7-day confidence drift against the frozen reference. ks_d uses every
-- decision; ks_p and psi_noise use n_eff = distinct conversations. status: ok / warning /
-- critical for this evaluation alone, insufficient, no_reference. day is 'YYYY-MM-DD',
-- evaluated_at is processing time with milliseconds.
CREATE VIEW confidence_drift_daily AS
SELECT date(day_ms / 1000, 'unixepoch') AS day,
       classifier_version, router, signal, "window", n, n_eff, ref_n, ks_d, ks_p, psi, psi_noise,
       cheap_share_expected, cheap_share_observed, status,
       strftime('%Y-%m-%dT%H:%M:%fZ', evaluated_at_ms / 1000.0, 'unixepoch') AS evaluated_at
FROM tw_drift_daily;

-- One row per alert episode (firing → resolved); the id is a hash of kind, subject and the
-- event-time window that fired it. window_*/fired_at/escalated_at/resolved_at are event time.
CREATE TABLE tw_alerts (
    id              TEXT    PRIMARY KEY,
    kind            TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    severity        TEXT    NOT NULL CHECK (severity IN ('warning', 'critical')),
    state           TEXT    NOT NULL CHECK (state IN ('firing', 'resolved')),
    value           REAL    NOT NULL,
    threshold       REAL    NOT NULL,
    window_start_ms INTEGER NOT NULL,
    window_end_ms   INTEGER NOT NULL,
    fired_at_ms     INTEGER NOT NULL,
    escalated_at_ms INTEGER,
    resolved_at_ms  INTEGER,
    last_value      REAL    NOT NULL,
    notified        TEXT    NOT NULL DEFAULT '',
    updated_at_ms   INTEGER NOT NULL
                    DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
);

-- Alert episodes. Event-time columns are 'YYYY-MM-DDTHH:MM:SSZ' (whole seconds: they are
-- window boundaries), updated_at is processing time with milliseconds.
CREATE VIEW alerts AS
SELECT id, kind, subject, severity, state, value, threshold,
       strftime('%Y-%m-%dT%H:%M:%SZ', window_start_ms / 1000, 'unixepoch') AS window_start,
       strftime('%Y-%m-%dT%H:%M:%SZ', window_end_ms / 1000, 'unixepoch') AS window_end,
       strftime('%Y-%m-%dT%H:%M:%SZ', fired_at_ms / 1000, 'unixepoch') AS fired_at,
       strftime('%Y-%m-%dT%H:%M:%SZ', escalated_at_ms / 1000, 'unixepoch') AS escalated_at,
       strftime('%Y-%m-%dT%H:%M:%SZ', resolved_at_ms / 1000, 'unixepoch') AS resolved_at,
       last_value,
       strftime('%Y-%m-%dT%H:%M:%fZ', updated_at_ms / 1000.0, 'unixepoch') AS updated_at
FROM tw_alerts;
