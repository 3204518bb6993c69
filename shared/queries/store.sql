-- The event store: appending with optimistic concurrency, and bulk loading (shared/store.py).

-- name: stream_version
-- The last sequence_num of an aggregate (0 when it has no events).
SELECT coalesce(max(sequence_num), 0) AS v FROM event WHERE aggregate_id = %(aggregate_id)s;

-- name: insert_event
INSERT INTO event (event_id, aggregate_id, aggregate_type, event_type, payload, metadata,
                   sequence_num, occurred_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s);

-- name: copy_events
-- COPY's text format, one line an event (store.format_copy_line).
COPY event (event_id, aggregate_id, aggregate_type, event_type, payload, metadata, sequence_num,
            occurred_at) FROM STDIN;
