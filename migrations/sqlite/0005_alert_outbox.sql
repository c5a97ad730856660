-- Durable alert delivery — embedded SQLite store.
--
-- SQLite twin of ../0005_alert_outbox.sql (read it for the meaning of every column); time is
-- INTEGER epoch ms, booleans INTEGER 0/1.
CREATE TABLE tw_alert_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook         TEXT    NOT NULL,
    episode_id      TEXT    NOT NULL,
    transition      TEXT    NOT NULL,
    notification    TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL
                    DEFAULT (CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    delivered       INTEGER NOT NULL DEFAULT 0,
    rejected        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    delivered_at_ms INTEGER
);
CREATE INDEX tw_alert_outbox_pending ON tw_alert_outbox (webhook, id) WHERE delivered = 0;
