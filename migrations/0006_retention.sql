-- Retention (privacy.review_retention_days): the periodic task deletes review-queue rows by
-- insert time; without this index every run would scan the whole sample table.
CREATE INDEX tw_rescore_samples_inserted_at ON tw_rescore_samples (inserted_at);
