-- Progress per aggregate (issue 15): for a handler and an aggregate of the event table, every
-- event with sequence_num <= watermark has been processed. A handler that requires order
-- processes an aggregate's events as a prefix 1..n in the common case, so one row per aggregate
-- says what a processed marker per event said; processed_event keeps a marker only for what a
-- watermark cannot say (an event processed beyond a gap: by a time-range or event-type replay,
-- out of order, or of another source than the event table). marked_max: no marker of the
-- aggregate's events lies beyond it (0: none), so an event beyond both numbers is new without a
-- lookup.
CREATE TABLE handler_progress (
    handler_name varchar(100) NOT NULL,
    aggregate_id varchar(100) NOT NULL,
    watermark    bigint       NOT NULL DEFAULT 0,
    marked_max   bigint       NOT NULL DEFAULT 0,
    PRIMARY KEY (handler_name, aggregate_id)
);

-- The existing markers become watermarks where they form a prefix 1..k (sequence_num equal to
-- its rank), and stay markers beyond it.
INSERT INTO handler_progress (handler_name, aggregate_id, watermark, marked_max)
SELECT handler_name, aggregate_id,
       coalesce(max(sequence_num) FILTER (WHERE sequence_num = rank), 0), max(sequence_num)
  FROM (SELECT p.handler_name, e.aggregate_id, e.sequence_num,
               row_number() OVER (PARTITION BY p.handler_name, e.aggregate_id
                                  ORDER BY e.sequence_num) AS rank
          FROM processed_event p JOIN event e ON e.event_id = p.event_id) marked
 GROUP BY handler_name, aggregate_id;

DELETE FROM processed_event p
 USING event e, handler_progress w
 WHERE e.event_id = p.event_id AND w.handler_name = p.handler_name
   AND w.aggregate_id = e.aggregate_id AND e.sequence_num <= w.watermark;

-- The seed's contract, "has handler H processed event E?", as one query: a marker, or the
-- event's aggregate's watermark, or the handler's last full rebuild (positional: it writes
-- neither) once it completed.
CREATE FUNCTION replay_processed(handler text, event uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM processed_event p
                    WHERE p.handler_name = handler AND p.event_id = event)
        OR EXISTS (SELECT 1 FROM event e
                     JOIN handler_progress w
                       ON w.handler_name = handler AND w.aggregate_id = e.aggregate_id
                    WHERE e.event_id = event AND e.sequence_num <= w.watermark)
        OR EXISTS (SELECT 1 FROM event e
                     JOIN handler_state h ON h.handler_name = handler
                    WHERE e.event_id = event AND h.rebuild_completed
                      AND pg_visible_in_snapshot(e.txid, h.rebuild_snapshot))
$$;

-- The same for every event at once: the (handler, event) pairs processed, each once.
CREATE VIEW processed AS
SELECT handler_name, event_id FROM processed_event
 UNION
SELECT w.handler_name, e.event_id
  FROM handler_progress w
  JOIN event e ON e.aggregate_id = w.aggregate_id AND e.sequence_num <= w.watermark
 UNION
SELECT h.handler_name, e.event_id
  FROM handler_state h
  JOIN event e ON h.rebuild_completed AND pg_visible_in_snapshot(e.txid, h.rebuild_snapshot);
