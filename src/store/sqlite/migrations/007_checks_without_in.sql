-- SQLite evaluates a CHECK whose IN list has more than two constants by building a temporary
-- index, on every insert and every update of the column: five of them per task's life here.
-- The same checks written as OR chains are plain comparisons. A CHECK cannot be altered in
-- place, so the three tables are rebuilt with their rows, indexes and trigger.

CREATE TABLE tasks_new (
  seq              INTEGER PRIMARY KEY,  -- insertion order; ties broken by it
  id               TEXT    NOT NULL UNIQUE,
  status           TEXT    NOT NULL CHECK (status = 'pending' OR status = 'running' OR status = 'completed'
                                           OR status = 'failed' OR status = 'cancelled'),
  task_type        TEXT    NOT NULL,
  model_name       TEXT    NOT NULL,
  input_data       TEXT    NOT NULL,
  parameters       TEXT    NOT NULL,
  priority         INTEGER NOT NULL DEFAULT 0,
  attempts         INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL,
  timeout_ms       INTEGER NOT NULL,
  created_at       INTEGER NOT NULL,
  started_at       INTEGER,
  completed_at     INTEGER,
  cancelled_at     INTEGER,
  updated_at       INTEGER NOT NULL,
  worker_id        TEXT,
  lease_token      TEXT,
  lease_expires_at INTEGER,
  progress         REAL,
  result           TEXT,
  error_code       TEXT,
  error_message    TEXT,
  webhook_url      TEXT,
  webhook_events   TEXT   -- JSON array of statuses
);
INSERT INTO tasks_new SELECT * FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;

CREATE INDEX tasks_lease ON tasks (model_name, task_type, priority DESC, seq) WHERE status = 'pending';
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_status_created ON tasks (status, created_at);
CREATE INDEX tasks_created ON tasks (created_at);
CREATE INDEX tasks_type_created ON tasks (task_type, created_at);
CREATE INDEX tasks_model_created ON tasks (model_name, created_at);
CREATE INDEX tasks_running_deadline ON tasks (started_at + timeout_ms) WHERE status = 'running';

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
  UPDATE task_counts SET current = current - 1
   WHERE task_type = OLD.task_type AND model_name = OLD.model_name AND status = OLD.status;
END;

CREATE TABLE task_events_new (
  id       INTEGER PRIMARY KEY,
  task_id  TEXT    NOT NULL,
  type     TEXT    NOT NULL CHECK (type = 'status' OR type = 'progress' OR type = 'output'),
  status   TEXT,
  progress REAL,
  text     TEXT,
  at       INTEGER NOT NULL
);
INSERT INTO task_events_new SELECT * FROM task_events;
DROP TABLE task_events;
ALTER TABLE task_events_new RENAME TO task_events;
CREATE INDEX task_events_task ON task_events (task_id, id);

CREATE TABLE webhook_deliveries_new (
  id               INTEGER PRIMARY KEY,
  task_id          TEXT    NOT NULL,
  event            TEXT    NOT NULL,  -- the status the task entered
  url              TEXT    NOT NULL,
  state            TEXT    NOT NULL DEFAULT 'pending' CHECK (state = 'pending' OR state = 'delivered' OR state = 'failed'),
  attempts         INTEGER NOT NULL DEFAULT 0,
  next_attempt_at  INTEGER NOT NULL,
  last_status_code INTEGER,
  last_error       TEXT,
  created_at       INTEGER NOT NULL,
  delivered_at     INTEGER
);
INSERT INTO webhook_deliveries_new SELECT * FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_task ON webhook_deliveries (task_id, id);
