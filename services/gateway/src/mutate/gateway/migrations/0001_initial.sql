-- The gateway's tables: tenancy, configurations with every version, uploads,
-- jobs and idempotency keys. Applied with search_path set to the gateway's
-- schema (mutate.common.migrations).

CREATE TABLE organizations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX organizations_name_key ON organizations (name);

CREATE TABLE api_keys (
    id               text PRIMARY KEY,
    organization_id  text NOT NULL REFERENCES organizations (id),
    name             text NOT NULL,
    -- The first characters of the secret, to tell keys apart in listings.
    prefix           text NOT NULL,
    -- SHA-256 of the whole secret; the secret itself is never stored.
    key_hash         bytea NOT NULL UNIQUE,
    scopes           text[] NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_used_at     timestamptz,
    revoked_at       timestamptz
);
CREATE INDEX api_keys_organization_idx ON api_keys (organization_id, created_at DESC, id DESC);

CREATE TABLE configurations (
    id               text PRIMARY KEY,
    organization_id  text NOT NULL REFERENCES organizations (id),
    name             text NOT NULL,
    current_version  bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Deleted configurations stay for the jobs that ran them.
    deleted_at       timestamptz
);
CREATE INDEX configurations_organization_idx
    ON configurations (organization_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

-- Every version of every configuration, as its proto3 JSON.
CREATE TABLE configuration_versions (
    configuration_id  text NOT NULL REFERENCES configurations (id),
    version           bigint NOT NULL,
    spec              jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (configuration_id, version)
);

CREATE TABLE uploads (
    id               text PRIMARY KEY,
    organization_id  text NOT NULL REFERENCES organizations (id),
    storage_key      text NOT NULL,
    file_name        text NOT NULL,
    content_type     text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL
);

CREATE TABLE jobs (
    id                     text PRIMARY KEY,
    organization_id        text NOT NULL REFERENCES organizations (id),
    configuration_id       text NOT NULL REFERENCES configurations (id),
    configuration_version  bigint NOT NULL,
    status                 text NOT NULL DEFAULT 'pending' CHECK (status IN
        ('pending', 'running', 'completed', 'failed', 'cancelled', 'dead_lettered')),
    mode                   text NOT NULL CHECK (mode IN ('auto', 'sync', 'async')),
    -- Events are applied in (attempt, event_rank) order: 0 nothing yet,
    -- 1 started, 2 progress, 3 terminal (the first terminal event wins).
    attempt                integer NOT NULL DEFAULT 1,
    event_rank             smallint NOT NULL DEFAULT 0,
    progress_percent       integer NOT NULL DEFAULT 0,
    input_key              text NOT NULL,
    input_file_name        text NOT NULL,
    input_bytes            bigint NOT NULL,
    upload_id              text REFERENCES uploads (id),
    output_key             text NOT NULL DEFAULT '',
    output_file_name       text NOT NULL DEFAULT '',
    output_bytes           bigint NOT NULL DEFAULT 0,
    output_rows            bigint NOT NULL DEFAULT 0,
    output_columns         bigint NOT NULL DEFAULT 0,
    output_content_type    text NOT NULL DEFAULT '',
    output_sha256          text NOT NULL DEFAULT '',
    execution_log          jsonb NOT NULL DEFAULT '[]',
    warnings               jsonb NOT NULL DEFAULT '[]',
    error                  jsonb,
    webhook_url            text NOT NULL DEFAULT '',
    client_reference       text NOT NULL DEFAULT '',
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    started_at             timestamptz,
    finished_at            timestamptz,
    -- When the current attempt was handed to the queue or to a synchronous
    -- Transform; NULL pending rows are picked up by the sweeper.
    dispatched_at          timestamptz
);
CREATE INDEX jobs_organization_status_created_idx
    ON jobs (organization_id, status, created_at DESC, id DESC);
CREATE INDEX jobs_organization_created_idx
    ON jobs (organization_id, created_at DESC, id DESC);
CREATE INDEX jobs_configuration_idx ON jobs (configuration_id, created_at DESC);
CREATE INDEX jobs_undispatched_idx ON jobs (created_at)
    WHERE status = 'pending' AND dispatched_at IS NULL;
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at);

CREATE TABLE idempotency_keys (
    organization_id  text NOT NULL REFERENCES organizations (id),
    key              text NOT NULL,
    -- SHA-256 of the request, to tell a retry from a different request.
    request_hash     bytea NOT NULL,
    job_id           text,
    -- 'running' while the first request works; 'done' when its answer is final.
    state            text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (organization_id, key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
