-- Durable alert delivery: an outbox of webhook notifications.
--
-- The evaluator writes one row per (alert transition, configured webhook) in the same
-- transaction that records the transition in tw_alerts.notified, so a transition is either
-- recorded with its notifications queued, or not recorded at all (and re-derived by the next
-- evaluation pass). A delivery task per webhook posts the undelivered rows in id order, retrying
-- with backoff; rows left undelivered by a crash, an outage or the shutdown grace period are
-- picked up after a restart.
CREATE TABLE tw_alert_outbox (
    id           bigserial   PRIMARY KEY,
    -- Which webhook: a hash of its URL and payload format (never the URL: it may hold a secret).
    webhook      text        NOT NULL,
    episode_id   text        NOT NULL,
    -- The transition delivered, 'state:severity' (as in tw_alerts.notified).
    transition   text        NOT NULL,
    -- The notification (episode as of the transition, summary) as JSON.
    notification text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- true once the webhook accepted it (2xx) or refused it for good (rejected).
    delivered    boolean     NOT NULL DEFAULT false,
    -- true when the webhook refused it with a non-retryable answer (4xx other than 408/429).
    rejected     boolean     NOT NULL DEFAULT false,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    delivered_at timestamptz
);
CREATE INDEX tw_alert_outbox_pending ON tw_alert_outbox (webhook, id) WHERE NOT delivered;
COMMENT ON TABLE tw_alert_outbox IS
    'Alert webhook notifications, one row per transition and webhook, written with the transition and delivered (in id order, retried with backoff, after restarts too) by the webhook delivery task. Delivered rows are kept 7 days.';
