-- A parked event as it was read, without its payload: its aggregate, number, type and metadata.
-- An event of the event table is found again by its id; a Kafka message only by where it lies,
-- which its metadata says (metadata.kafka: partition and offset), so `replay parked` can show it
-- and `replay retry-parked` can read it again. Rows parked before this stay readable by id.
ALTER TABLE parked_event
    ADD COLUMN aggregate_id text,
    ADD COLUMN sequence_num bigint,
    ADD COLUMN event_type   text,
    ADD COLUMN metadata     jsonb;
