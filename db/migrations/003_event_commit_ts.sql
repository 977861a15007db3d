-- A delta's cts (docs/protocol.md): the server's clock that the db thread stamps
-- on the group commit journaling it. Live deltas carried it, replays from the
-- journal could not, so a resumed client saw one change in two forms. The
-- journal keeps it now, and a replayed delta is the live one, byte for byte.
-- Rows journaled before this column have none: replayed, they have no "cts"
-- (as every replayed delta had before).
ALTER TABLE job_events ADD COLUMN cts timestamptz;
