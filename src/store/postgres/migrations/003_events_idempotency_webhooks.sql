-- Task event log (SSE resume, live progress and streamed output), idempotency keys, and
-- webhooks. Status events and webhook deliveries are written by triggers, in the same
-- transaction as the transition, so none is lost to a crash.
CREATE TABLE task_events (
  id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  task_id  TEXT   NOT NULL,
  type     TEXT   NOT NULL CHECK (type IN ('status', 'progress', 'output')),
  status   TEXT,
  progress DOUBLE PRECISION,
  text     TEXT,
  at       BIGINT NOT NULL
);
CREATE INDEX task_events_task ON task_events (task_id, id);

CREATE TABLE idempotency_keys (
  key         TEXT   PRIMARY KEY,
  fingerprint TEXT   NOT NULL,
  task_id     TEXT   NOT NULL,
  created_at  BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

ALTER TABLE tasks ADD COLUMN webhook_url TEXT;
ALTER TABLE tasks ADD COLUMN webhook_events JSONB;

CREATE TABLE webhook_deliveries (
  id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  task_id          TEXT    NOT NULL,
  event            TEXT    NOT NULL,
  url              TEXT    NOT NULL,
  state            TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  BIGINT  NOT NULL,
  last_status_code INTEGER,
  last_error       TEXT,
  created_at       BIGINT  NOT NULL,
  delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id, id);

CREATE FUNCTION task_events_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR OLD.status <> NEW.status THEN
    INSERT INTO task_events (task_id, type, status, at) VALUES (NEW.id, 'status', NEW.status, NEW.updated_at);
    IF NEW.webhook_url IS NOT NULL AND NEW.webhook_events ? NEW.status THEN
      INSERT INTO webhook_deliveries (task_id, event, url, next_attempt_at, created_at)
      VALUES (NEW.id, NEW.status, NEW.webhook_url, NEW.updated_at, NEW.updated_at);
    END IF;
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_events AFTER INSERT OR UPDATE OF status ON tasks
  FOR EACH ROW EXECUTE FUNCTION task_events_trigger();
