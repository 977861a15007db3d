-- Each node declares its own TTL (issue 14). The other nodes judged a node's
-- heartbeat by their own --node-ttl, so a node started with a longer TTL than
-- its peers (it heartbeats every third of its own) was declared dead between
-- two of its heartbeats while healthy. A node is now judged by the TTL it
-- registered with; NULL (a node registered before this migration): the
-- judge's own.
ALTER TABLE jw_nodes ADD COLUMN ttl_ms integer;
