-- cofferdam store, schema version 3: notifications on their way, one row
-- per (sink, event), written in the transaction that records a run's end.
-- Deliverers lease due rows with FOR UPDATE SKIP LOCKED, so two replicas
-- never hold one row.
CREATE TABLE outbox (
    sink text NOT NULL,
    event_id text NOT NULL,
    state text NOT NULL,
    next_ms bigint NOT NULL,
    lease_ms bigint NOT NULL,
    created_ms bigint NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (sink, event_id)
);
CREATE INDEX outbox_due ON outbox (next_ms) WHERE state = 'pending';
