-- Router evaluation: per-confidence outcomes of routed turns, the reliability curve, the
-- calibration error and threshold advice with its net cost. Same tables and views as the
-- Postgres migration of the same number; days are 'YYYY-MM-DD' in the views.

-- Turns per cohort day, classifier version, router, serving tier, 0.01 confidence cell and
-- conversation group (see the Postgres table comment).
CREATE TABLE tw_agg_calibration (
    day_ms             INTEGER NOT NULL,
    classifier_version TEXT    NOT NULL,
    router             TEXT    NOT NULL,
    tier               TEXT    NOT NULL,
    cell               INTEGER NOT NULL CHECK (cell >= 0 AND cell < 100),
    grp                INTEGER NOT NULL CHECK (grp >= 0),
    decisions          INTEGER NOT NULL DEFAULT 0,
    failures           INTEGER NOT NULL DEFAULT 0,
    failed_deflections INTEGER NOT NULL DEFAULT 0,
    conf_e4            INTEGER NOT NULL DEFAULT 0,
    cost_nusd          INTEGER NOT NULL DEFAULT 0,
    capable_cost_nusd  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day_ms, classifier_version, router, tier, cell, grp)
) WITHOUT ROWID;

CREATE TABLE tw_calibration_daily (
    day_ms                INTEGER NOT NULL,
    classifier_version    TEXT    NOT NULL,
    router                TEXT    NOT NULL,
    "window"              TEXT    NOT NULL,
    bin                   INTEGER NOT NULL,
    conf_lo               REAL    NOT NULL,
    conf_hi               REAL    NOT NULL,
    conf_mean             REAL,
    n                     INTEGER NOT NULL,
    failures              INTEGER NOT NULL,
    failure_rate          REAL,
    failure_rate_lo       REAL,
    failure_rate_hi       REAL,
    baseline_n            INTEGER NOT NULL,
    baseline_failures     INTEGER NOT NULL,
    baseline_failure_rate REAL,
    p_value               REAL,
    status                TEXT    NOT NULL CHECK (status IN ('ok', 'regressed', 'insufficient', 'baseline')),
    evaluated_at_ms       INTEGER NOT NULL
                          DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    PRIMARY KEY (day_ms, classifier_version, router, "window", bin)
);

CREATE TABLE tw_calibration_summary_daily (
    day_ms             INTEGER NOT NULL,
    classifier_version TEXT    NOT NULL,
    router             TEXT    NOT NULL,
    "window"           TEXT    NOT NULL,
    n                  INTEGER NOT NULL,
    failures           INTEGER NOT NULL,
    bins               INTEGER NOT NULL,
    ece                REAL,
    ece_lo             REAL,
    ece_hi             REAL,
    overconfidence     REAL,
    overconfidence_lo  REAL,
    overconfidence_hi  REAL,
    ece_plugin         REAL,
    evaluated_at_ms    INTEGER NOT NULL
                       DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    PRIMARY KEY (day_ms, classifier_version, router, "window")
);

CREATE TABLE tw_threshold_advice (
    day_ms                         INTEGER NOT NULL,
    classifier_version             TEXT    NOT NULL,
    router                         TEXT    NOT NULL,
    "window"                       TEXT    NOT NULL,
    threshold                      REAL    NOT NULL,
    is_current                     INTEGER NOT NULL,
    is_recommended                 INTEGER NOT NULL,
    decisions                      INTEGER NOT NULL,
    cheap_share                    REAL    NOT NULL,
    inference_cost_usd             REAL    NOT NULL,
    expected_failed_deflections    REAL    NOT NULL,
    expected_failed_deflections_lo REAL    NOT NULL,
    expected_failed_deflections_hi REAL    NOT NULL,
    cheap_failure_rate             REAL,
    human_cost_per_failure_usd     REAL    NOT NULL,
    expected_human_cost_usd        REAL    NOT NULL,
    net_cost_usd                   REAL    NOT NULL,
    net_cost_lo_usd                REAL    NOT NULL,
    net_cost_hi_usd                REAL    NOT NULL,
    net_saving_usd                 REAL    NOT NULL,
    net_saving_lo_usd              REAL    NOT NULL,
    net_saving_hi_usd              REAL    NOT NULL,
    extrapolated                   INTEGER NOT NULL,
    evaluated_at_ms                INTEGER NOT NULL
                                   DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    PRIMARY KEY (day_ms, classifier_version, router, "window", threshold)
);

-- Reliability curve of the turns the cheap tier kept (see the Postgres view comment).
CREATE VIEW calibration_daily AS
SELECT date(day_ms / 1000, 'unixepoch') AS day,
       classifier_version, router, "window", bin, conf_lo, conf_hi, conf_mean, n, failures,
       failure_rate, failure_rate_lo, failure_rate_hi, baseline_n, baseline_failures, baseline_failure_rate,
       p_value, status,
       strftime('%Y-%m-%dT%H:%M:%fZ', evaluated_at_ms / 1000.0, 'unixepoch') AS evaluated_at
FROM tw_calibration_daily;

-- Calibration error (ECE, overconfidence) with bootstrap intervals over conversation groups.
CREATE VIEW calibration_summary_daily AS
SELECT date(day_ms / 1000, 'unixepoch') AS day,
       classifier_version, router, "window", n, failures, bins, ece, ece_lo, ece_hi, overconfidence,
       overconfidence_lo, overconfidence_hi, ece_plugin,
       strftime('%Y-%m-%dT%H:%M:%fZ', evaluated_at_ms / 1000.0, 'unixepoch') AS evaluated_at
FROM tw_calibration_summary_daily;

-- Net cost per candidate threshold (booleans as 0/1, as everywhere in the SQLite store).
CREATE VIEW threshold_advice AS
SELECT date(day_ms / 1000, 'unixepoch') AS day,
       classifier_version, router, "window", threshold, is_current, is_recommended, decisions, cheap_share,
       inference_cost_usd, expected_failed_deflections, expected_failed_deflections_lo,
       expected_failed_deflections_hi, cheap_failure_rate, human_cost_per_failure_usd, expected_human_cost_usd,
       net_cost_usd, net_cost_lo_usd, net_cost_hi_usd, net_saving_usd, net_saving_lo_usd, net_saving_hi_usd,
       extrapolated,
       strftime('%Y-%m-%dT%H:%M:%fZ', evaluated_at_ms / 1000.0, 'unixepoch') AS evaluated_at
FROM tw_threshold_advice;
