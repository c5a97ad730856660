-- Confidence drift (SPEC §4.3) and alerts (SPEC §5).
--
-- Confidences are recorded at 1e-4 resolution as exact count histograms, one row per
-- (hour, partition, signal, classifier_version, router). A partition is written only by its
-- owner (fenced by tw_partitions.generation in the same transaction as the offsets), so the
-- daemon merges a batch into the stored row by read-modify-write; the evaluator merges rows
-- across hours, partitions and instances (histograms merge by adding counts).

CREATE TABLE tw_conf_hist (
    hour               timestamptz NOT NULL,
    partition          int         NOT NULL,
    signal             text        NOT NULL,
    classifier_version text        NOT NULL,
    router             text        NOT NULL,
    n                  bigint      NOT NULL,
    conversations      bigint      NOT NULL,
    routed_cheap       bigint      NOT NULL,
    threshold_sum      double precision NOT NULL,
    threshold_n        bigint      NOT NULL,
    hist               bytea       NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hour, partition, signal, classifier_version, router)
);
COMMENT ON TABLE tw_conf_hist IS
    'Per hour and partition: exact histogram (1e-4 bins, tierwatch sparse format) of a confidence signal, with the decisions, distinct conversations (first turn of the UTC day for that version/router, the effective sample size), decisions routed off the capable tier, and the thresholds in force.';
CREATE INDEX tw_conf_hist_updated ON tw_conf_hist (updated_at);

CREATE TABLE tw_references (
    classifier_version text        NOT NULL,
    signal             text        NOT NULL,
    source             text        NOT NULL,
    n                  bigint      NOT NULL,
    n_eff              bigint      NOT NULL,
    hist               bytea       NOT NULL,
    psi_edges          int[]       NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (classifier_version, signal)
);
COMMENT ON TABLE tw_references IS
    'Frozen reference distribution per classifier version and signal: from a training-time file or a baseline window of the stream. PSI bin edges (bins of 1e-4) are frozen with it, so they never move per window.';

CREATE TABLE tw_drift_daily (
    day                  date    NOT NULL,
    classifier_version   text    NOT NULL,
    router               text    NOT NULL,
    signal               text    NOT NULL,
    "window"             text    NOT NULL CHECK ("window" IN ('1d', '7d')),
    n                    bigint  NOT NULL,
    n_eff                bigint  NOT NULL,
    ref_n                bigint  NOT NULL,
    ks_d                 double precision,
    ks_p                 double precision,
    psi                  double precision,
    psi_noise            double precision,
    cheap_share_expected double precision,
    cheap_share_observed double precision,
    status               text    NOT NULL CHECK (status IN ('ok', 'warning', 'critical', 'insufficient', 'no_reference')),
    evaluated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, classifier_version, router, signal, "window")
);

CREATE VIEW confidence_drift_daily AS
SELECT day, classifier_version, router, signal, "window", n, n_eff, ref_n, ks_d, ks_p, psi, psi_noise,
       cheap_share_expected, cheap_share_observed, status, evaluated_at
FROM tw_drift_daily;
COMMENT ON VIEW confidence_drift_daily IS
    'Daily and rolling 7-day confidence drift against the frozen reference. ks_d uses every decision; ks_p and psi_noise use n_eff = distinct conversations (turns of one conversation are not independent). status: ok / warning / critical for this evaluation alone (alerts add hysteresis), insufficient (n below the configured minimum), no_reference (this classifier version has no reference yet).';
COMMENT ON COLUMN confidence_drift_daily.cheap_share_expected IS
    'PRE_ROUTE: share of decisions the reference predicts above the mean threshold in force, i.e. routed to the cheap tier.';
COMMENT ON COLUMN confidence_drift_daily.cheap_share_observed IS
    'Share of decisions actually routed to a tier other than the capable one.';

CREATE TABLE tw_alerts (
    id                   text        PRIMARY KEY,
    kind                 text        NOT NULL,
    subject              text        NOT NULL,
    severity             text        NOT NULL CHECK (severity IN ('warning', 'critical')),
    state                text        NOT NULL CHECK (state IN ('firing', 'resolved')),
    value                double precision NOT NULL,
    threshold            double precision NOT NULL,
    window_start         timestamptz NOT NULL,
    window_end           timestamptz NOT NULL,
    fired_at             timestamptz NOT NULL,
    escalated_at         timestamptz,
    resolved_at          timestamptz,
    last_value           double precision NOT NULL,
    notified             text        NOT NULL DEFAULT '',
    updated_at           timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tw_alerts IS
    'One row per alert episode (firing → resolved). The id is a hash of kind, subject and the event-time window that fired it, so re-evaluation on any instance updates the same row instead of duplicating it. fired_at/escalated_at/resolved_at are event time (end of the evaluated window). notified records which transitions the webhooks were given.';

CREATE VIEW alerts AS
SELECT id, kind, subject, severity, state, value, threshold, window_start, window_end, fired_at, escalated_at,
       resolved_at, last_value, updated_at
FROM tw_alerts;
COMMENT ON VIEW alerts IS 'Alert episodes: kind, subject, severity, value and threshold at firing, the event-time window, and the lifecycle.';
