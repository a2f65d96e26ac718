-- Task event log (SSE resume, live progress and streamed output), idempotency keys, and
-- webhooks. Status events and webhook deliveries are written by triggers, in the same
-- transaction as the transition, so none is lost to a crash.
CREATE TABLE task_events (
  id       INTEGER PRIMARY KEY,
  task_id  TEXT    NOT NULL,
  type     TEXT    NOT NULL CHECK (type IN ('status', 'progress', 'output')),
  status   TEXT,
  progress REAL,
  text     TEXT,
  at       INTEGER NOT NULL
);
CREATE INDEX task_events_task ON task_events (task_id, id);

CREATE TRIGGER task_events_insert AFTER INSERT ON tasks BEGIN
  INSERT INTO task_events (task_id, type, status, at) VALUES (NEW.id, 'status', NEW.status, NEW.updated_at);
END;

CREATE TRIGGER task_events_status AFTER UPDATE OF status ON tasks WHEN OLD.status <> NEW.status BEGIN
  INSERT INTO task_events (task_id, type, status, at) VALUES (NEW.id, 'status', NEW.status, NEW.updated_at);
END;

CREATE TABLE idempotency_keys (
  key         TEXT    PRIMARY KEY,
  fingerprint TEXT    NOT NULL,
  task_id     TEXT    NOT NULL,
  created_at  INTEGER NOT NULL
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

ALTER TABLE tasks ADD COLUMN webhook_url TEXT;
ALTER TABLE tasks ADD COLUMN webhook_events TEXT;  -- JSON array of statuses

CREATE TABLE webhook_deliveries (
  id               INTEGER PRIMARY KEY,
  task_id          TEXT    NOT NULL,
  event            TEXT    NOT NULL,  -- the status the task entered
  url              TEXT    NOT NULL,
  state            TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  INTEGER NOT NULL,
  last_status_code INTEGER,
  last_error       TEXT,
  created_at       INTEGER NOT NULL,
  delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id, id);

CREATE TRIGGER webhook_on_insert AFTER INSERT ON tasks
  WHEN NEW.webhook_url IS NOT NULL AND EXISTS (SELECT 1 FROM json_each(NEW.webhook_events) WHERE value = NEW.status) BEGIN
  INSERT INTO webhook_deliveries (task_id, event, url, next_attempt_at, created_at)
  VALUES (NEW.id, NEW.status, NEW.webhook_url, NEW.updated_at, NEW.updated_at);
END;

CREATE TRIGGER webhook_on_status AFTER UPDATE OF status ON tasks
  WHEN OLD.status <> NEW.status AND NEW.webhook_url IS NOT NULL
   AND EXISTS (SELECT 1 FROM json_each(NEW.webhook_events) WHERE value = NEW.status) BEGIN
  INSERT INTO webhook_deliveries (task_id, event, url, next_attempt_at, created_at)
  VALUES (NEW.id, NEW.status, NEW.webhook_url, NEW.updated_at, NEW.updated_at);
END;
