-- Router evaluation: per-confidence outcomes of routed turns, the reliability curve, the
-- calibration error and threshold advice with its net cost.
--
-- tw_agg_calibration is written by the batch commit (additive, exactly once with the offsets like
-- every aggregate). The evaluator recomputes the three result tables from it on every pass.

CREATE TABLE tw_agg_calibration (
    day                date     NOT NULL,
    classifier_version text     NOT NULL,
    router             text     NOT NULL,
    tier               text     NOT NULL,
    cell               smallint NOT NULL CHECK (cell >= 0 AND cell < 100),
    grp                smallint NOT NULL CHECK (grp >= 0),
    decisions          bigint   NOT NULL DEFAULT 0,
    failures           bigint   NOT NULL DEFAULT 0,
    failed_deflections bigint   NOT NULL DEFAULT 0,
    conf_e4            bigint   NOT NULL DEFAULT 0,
    cost_nusd          bigint   NOT NULL DEFAULT 0,
    capable_cost_nusd  bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (day, classifier_version, router, tier, cell, grp)
);
COMMENT ON TABLE tw_agg_calibration IS
    'Turns per cohort day, classifier version, router, serving tier, 0.01 confidence cell (cell = floor(100 * confidence), 1.0 in cell 99) and conversation group (a hash of the conversation id into 32 groups, the unit of the calibration-error bootstrap). failures counts turns with a failed deflection, a THUMBS_DOWN or a HUMAN_REVIEW with score 0 attributed to them (each turn once); conf_e4 is the sum of confidences in 1e-4 units.';

CREATE TABLE tw_calibration_daily (
    day                   date             NOT NULL,
    classifier_version    text             NOT NULL,
    router                text             NOT NULL,
    "window"              text             NOT NULL,
    bin                   smallint         NOT NULL,
    conf_lo               double precision NOT NULL,
    conf_hi               double precision NOT NULL,
    conf_mean             double precision,
    n                     bigint           NOT NULL,
    failures              bigint           NOT NULL,
    failure_rate          double precision,
    failure_rate_lo       double precision,
    failure_rate_hi       double precision,
    baseline_n            bigint           NOT NULL,
    baseline_failures     bigint           NOT NULL,
    baseline_failure_rate double precision,
    p_value               double precision,
    status                text             NOT NULL CHECK (status IN ('ok', 'regressed', 'insufficient', 'baseline')),
    evaluated_at          timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (day, classifier_version, router, "window", bin)
);

CREATE TABLE tw_calibration_summary_daily (
    day                   date             NOT NULL,
    classifier_version    text             NOT NULL,
    router                text             NOT NULL,
    "window"              text             NOT NULL,
    n                     bigint           NOT NULL,
    failures              bigint           NOT NULL,
    bins                  smallint         NOT NULL,
    ece                   double precision,
    ece_lo                double precision,
    ece_hi                double precision,
    overconfidence        double precision,
    overconfidence_lo     double precision,
    overconfidence_hi     double precision,
    ece_plugin            double precision,
    evaluated_at          timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (day, classifier_version, router, "window")
);

CREATE TABLE tw_threshold_advice (
    day                          date             NOT NULL,
    classifier_version           text             NOT NULL,
    router                       text             NOT NULL,
    "window"                     text             NOT NULL,
    threshold                    double precision NOT NULL,
    is_current                   boolean          NOT NULL,
    is_recommended               boolean          NOT NULL,
    decisions                    bigint           NOT NULL,
    cheap_share                  double precision NOT NULL,
    inference_cost_usd           double precision NOT NULL,
    expected_failed_deflections  double precision NOT NULL,
    expected_failed_deflections_lo double precision NOT NULL,
    expected_failed_deflections_hi double precision NOT NULL,
    cheap_failure_rate           double precision,
    human_cost_per_failure_usd   double precision NOT NULL,
    expected_human_cost_usd      double precision NOT NULL,
    net_cost_usd                 double precision NOT NULL,
    net_cost_lo_usd              double precision NOT NULL,
    net_cost_hi_usd              double precision NOT NULL,
    net_saving_usd               double precision NOT NULL,
    net_saving_lo_usd            double precision NOT NULL,
    net_saving_hi_usd            double precision NOT NULL,
    extrapolated                 boolean          NOT NULL,
    evaluated_at                 timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (day, classifier_version, router, "window", threshold)
);

CREATE VIEW calibration_daily AS
SELECT day, classifier_version, router, "window", bin, conf_lo, conf_hi, conf_mean, n, failures,
       failure_rate, failure_rate_lo, failure_rate_hi, baseline_n, baseline_failures, baseline_failure_rate,
       p_value, status, evaluated_at
FROM tw_calibration_daily;
COMMENT ON VIEW calibration_daily IS
    'Reliability curve of the turns the cheap tier kept, per classifier version, router, window (7d, 28d, ending on day, mature cohorts only) and confidence bin. Bins are the frozen reference deciles of the drift reference, snapped to 0.01. For a CASCADE router this is under-escalation by self-confidence bin. status: ok, regressed (this bin''s failure rate is significantly and materially above its baseline, see calibration_regression), insufficient (no baseline yet or an empty bin), baseline (the window lies inside the baseline).';
COMMENT ON COLUMN calibration_daily.bin IS '0-based bin index; bins cover [conf_lo, conf_hi).';
COMMENT ON COLUMN calibration_daily.conf_mean IS 'Mean confidence of the bin''s cheap-served turns in the window.';
COMMENT ON COLUMN calibration_daily.n IS 'Turns the cheap tier served in this bin and window.';
COMMENT ON COLUMN calibration_daily.failures IS 'Of those, turns with a failed deflection, a THUMBS_DOWN or a HUMAN_REVIEW score 0 attributed to them.';
COMMENT ON COLUMN calibration_daily.failure_rate IS 'failures / n, with its 95% Wilson interval in failure_rate_lo/hi.';
COMMENT ON COLUMN calibration_daily.baseline_failure_rate IS 'The same bin''s failure rate over the baseline window (configured dates, else the first 14 mature days of this classifier version and router).';
COMMENT ON COLUMN calibration_daily.p_value IS 'One-sided two-proportion test of failure_rate > baseline_failure_rate (compare with alpha / number of bins tested).';

CREATE VIEW calibration_summary_daily AS
SELECT day, classifier_version, router, "window", n, failures, bins, ece, ece_lo, ece_hi, overconfidence,
       overconfidence_lo, overconfidence_hi, ece_plugin, evaluated_at
FROM tw_calibration_summary_daily;
COMMENT ON VIEW calibration_summary_daily IS
    'Calibration error of the confidence read as P(the cheap tier suffices), over the cheap-served turns of the window. ece_plugin = sum_b (n_b / n) * |(1 - failure_rate_b) - conf_mean_b| is biased upwards by sampling noise (a calibrated stream reads about 0.01 at 10k turns); ece and overconfidence (the part where conf_mean_b exceeds 1 - failure_rate_b) are debiased per bin, sqrt(max(0, gap^2 - var)) with var between conversation groups. Intervals: basic bootstrap over conversation groups (turns of one conversation move together), clamped at 0. Observed failures are a lower bound on answers that missed (not every failure is reported), so read ece as a trend.';

CREATE VIEW threshold_advice AS
SELECT day, classifier_version, router, "window", threshold, is_current, is_recommended, decisions, cheap_share,
       inference_cost_usd, expected_failed_deflections, expected_failed_deflections_lo,
       expected_failed_deflections_hi, cheap_failure_rate, human_cost_per_failure_usd, expected_human_cost_usd,
       net_cost_usd, net_cost_lo_usd, net_cost_hi_usd, net_saving_usd, net_saving_lo_usd, net_saving_hi_usd,
       extrapolated, evaluated_at
FROM tw_threshold_advice;
COMMENT ON VIEW threshold_advice IS
    'What each candidate threshold on a 0.01 grid around the one in force would have cost over the window: inference cost plus expected failed deflections times the human cost per failure. Stricter thresholds replace the moved turns'' observed cheap outcomes with the capable tier''s failed-deflection rate in the nearest confidence bin it serves; looser thresholds estimate the cheap outcome of turns the cheap tier never served from the rescoring slice and are marked extrapolated. is_recommended: the lowest net cost whose cheap-tier failure rate stays under the configured ceiling.';
COMMENT ON COLUMN threshold_advice.cheap_share IS 'Share of the window''s decisions that this threshold routes to the cheap tier.';
COMMENT ON COLUMN threshold_advice.inference_cost_usd IS 'Inference cost of the window''s decisions under this threshold (a moved decision costs its capable cost, or its estimated cheap cost).';
COMMENT ON COLUMN threshold_advice.expected_failed_deflections IS 'Failed deflections expected under this threshold, with conservative 95% bounds in _lo/_hi.';
COMMENT ON COLUMN threshold_advice.cheap_failure_rate IS 'Expected failed deflections per turn among the turns the cheap tier would serve under this threshold: compared with the configured ceiling.';
COMMENT ON COLUMN threshold_advice.human_cost_per_failure_usd IS 'Human cost charged per failed deflection: configured, else the window''s mean attributed ticket cost.';
COMMENT ON COLUMN threshold_advice.net_cost_usd IS 'inference_cost_usd + expected_human_cost_usd over the window; net_cost_lo_usd / net_cost_hi_usd from the failed-deflection bounds.';
COMMENT ON COLUMN threshold_advice.net_saving_usd IS 'Net cost of the threshold in force minus this threshold''s: positive = this one would have been cheaper. net_saving_lo_usd / net_saving_hi_usd bound it from the turns the two thresholds route differently only (the outcomes both share cancel), so they are much narrower than the difference of the net-cost bounds.';
COMMENT ON COLUMN threshold_advice.extrapolated IS 'True when turns the cheap tier never served would move to it: their outcome is an estimate from the rescoring slice, not an observation.';
