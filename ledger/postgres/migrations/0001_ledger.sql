-- The ledger's changes, in revision order: the one source of truth every
-- replica replays. ledger_head holds the last revision; every commit locks it,
-- which totally orders commits across replicas.
CREATE TABLE ledger_head (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    revision bigint  NOT NULL
);
INSERT INTO ledger_head (revision) VALUES (0);

CREATE TABLE ledger_changes (
    revision     bigint      PRIMARY KEY,
    change       bytea       NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
-- Out of line but uncompressed: a revoke-all of 100k agents is one ~30 MB
-- change, and compressing it inside the commit costs more than it saves.
ALTER TABLE ledger_changes ALTER COLUMN change SET STORAGE EXTERNAL;

-- The whole state at one revision, so that a replica starting up and the
-- pruning of old changes need not replay history from the start.
CREATE TABLE ledger_snapshot (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    revision bigint  NOT NULL,
    state    bytea   NOT NULL
);

CREATE TABLE signing_key (
    id  boolean PRIMARY KEY DEFAULT true CHECK (id),
    key bytea   NOT NULL
);

-- Each replica's hot heartbeat state, written every snapshot interval.
CREATE TABLE agent_snapshots (
    replica  text        PRIMARY KEY,
    taken_at timestamptz NOT NULL,
    state    bytea       NOT NULL
);
