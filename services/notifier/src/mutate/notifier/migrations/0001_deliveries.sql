-- Signing secrets (one row an organization) and webhook deliveries with
-- every try. Applied in schema `notifier` by mutate.common.migrations.

CREATE TABLE signing_secrets (
    organization_id      text PRIMARY KEY,
    -- `plain:whsec_…` or `aesgcm:<base64 nonce+ciphertext>` (see _secrets.py).
    secret               text NOT NULL,
    previous_secret      text,
    previous_expires_at  timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    rotated_at           timestamptz
);

CREATE TABLE deliveries (
    id                     text PRIMARY KEY,
    organization_id        text NOT NULL,
    job_id                 text NOT NULL DEFAULT '',
    job_attempt            integer NOT NULL DEFAULT 0,
    -- job.completed, job.failed, job.cancelled or webhook.test.
    event_type             text NOT NULL,
    -- The `webhook-id` header, the same on every try; derived from
    -- {jobId}.{attempt}.{type}, so a repeated event is one delivery.
    webhook_id             text NOT NULL UNIQUE,
    url                    text NOT NULL,
    -- scheme://host:port, for the per-endpoint concurrency limit.
    endpoint               text NOT NULL,
    -- The body without downloadUrl/expiresAt, which are fresh on each try.
    payload                json NOT NULL,
    output_key             text NOT NULL DEFAULT '',
    output_file_name       text NOT NULL DEFAULT '',
    -- W3C trace context of the event, so each try joins the job's trace.
    traceparent            text NOT NULL DEFAULT '',
    status                 text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'dead_lettered')),
    try_count              integer NOT NULL DEFAULT 0,
    -- Dead-lettered once try_count reaches it; a redelivery raises it.
    try_limit              integer NOT NULL,
    next_try_at            timestamptz,
    -- A notifier that took the delivery holds it until then; a crashed one
    -- lets it fall due again.
    locked_until           timestamptz,
    last_try_at            timestamptz,
    last_status_code       integer,
    last_response_excerpt  text NOT NULL DEFAULT '',
    last_error             text NOT NULL DEFAULT '',
    delivered_at           timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- The first terminal event of an attempt wins: one job delivery per attempt.
CREATE UNIQUE INDEX deliveries_one_per_attempt
    ON deliveries (organization_id, job_id, job_attempt)
    WHERE job_id <> '';
CREATE INDEX deliveries_due
    ON deliveries (next_try_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_job
    ON deliveries (organization_id, job_id, created_at);
CREATE INDEX deliveries_by_organization
    ON deliveries (organization_id, created_at DESC, id DESC);
CREATE INDEX deliveries_dead_by_organization
    ON deliveries (organization_id, created_at) WHERE status = 'dead_lettered';

CREATE TABLE delivery_tries (
    delivery_id  text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number       integer NOT NULL,
    tried_at     timestamptz NOT NULL,
    status_code  integer,
    error        text NOT NULL DEFAULT '',
    duration_ms  double precision NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
