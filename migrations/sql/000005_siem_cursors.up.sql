-- SIEM sinks: each forwards the log from a cursor of its own, moved only after its receiver
-- acknowledged a batch. seq is the last per-sink sequence number delivered, so numbering carries
-- on across restarts and a receiver can detect gaps.
CREATE TABLE siem_cursors (
    sink_id    text        PRIMARY KEY,
    position   bigint      NOT NULL,   -- the next log position to forward
    seq        bigint      NOT NULL,   -- the last sequence number delivered
    updated_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON siem_cursors TO tunnelplane_app;
