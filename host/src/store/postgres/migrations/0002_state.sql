-- cofferdam store, schema version 2: tool state, one row per key of a
-- space (`BUCKET/SCOPE`). Commits to one space are serialized by an
-- advisory transaction lock on the space, so its quota holds across
-- replicas.
CREATE TABLE state (
    space text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (space, key)
);
