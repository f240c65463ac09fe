-- cofferdam store, schema version 1. Records are JSON (the same serde types
-- the redb store writes); columns beside them are what queries and
-- constraints need.

-- Replicas and their leases: an owner is alive while expires_at > now().
CREATE TABLE owners (
    owner text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    pid bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);

-- One row per idempotency key (scope, tool, key encoded as one string).
CREATE TABLE idempotency (
    key text PRIMARY KEY,
    state text NOT NULL,
    owner text,
    updated_ms bigint NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX idempotency_claimed ON idempotency (owner) WHERE state = 'in-progress';

-- Capped scopes; rows are locked in scope order by every writer.
CREATE TABLE budgets (
    scope text PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE reservations (
    id bigserial PRIMARY KEY,
    owner text NOT NULL,
    tokens bigint NOT NULL,
    scopes text[] NOT NULL
);
CREATE INDEX reservations_owner ON reservations (owner);

CREATE TABLE audit (
    id bigserial PRIMARY KEY,
    started_ms bigint NOT NULL,
    tool text NOT NULL,
    task text,
    agent text,
    record jsonb NOT NULL
);
CREATE INDEX audit_started ON audit (started_ms DESC, id DESC);

-- At most one open escalation per de-duplication key.
CREATE TABLE escalations (
    id bigserial PRIMARY KEY,
    dedup text,
    resolved boolean NOT NULL DEFAULT false,
    record jsonb NOT NULL
);
CREATE UNIQUE INDEX escalations_open ON escalations (dedup) WHERE NOT resolved;

CREATE TABLE tasks (
    id text PRIMARY KEY,
    record jsonb NOT NULL
);

CREATE TABLE schedules (
    name text PRIMARY KEY,
    owner text NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX schedules_owner ON schedules (owner);

-- One row per (schedule, slot): a slot is journaled once across runners.
CREATE TABLE schedule_runs (
    name text NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    slot_ms bigint NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (name, slot_ms)
);

CREATE TABLE breaker_modes (
    tool text PRIMARY KEY,
    mode jsonb NOT NULL
);
