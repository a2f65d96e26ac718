-- Tasks, their indexes, and per-(type, model, status) counters kept by triggers so that
-- /health, /metrics and list totals never count rows.
CREATE TABLE tasks (
  seq              INTEGER PRIMARY KEY,  -- insertion order; ties broken by it
  id               TEXT    NOT NULL UNIQUE,
  status           TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
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
  error_message    TEXT
);

-- Lease order: highest priority, then oldest, per served model.
CREATE INDEX tasks_lease ON tasks (model_name, task_type, priority DESC, seq) WHERE status = 'pending';
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_status_created ON tasks (status, created_at);
CREATE INDEX tasks_created ON tasks (created_at);
CREATE INDEX tasks_type_created ON tasks (task_type, created_at);
CREATE INDEX tasks_model_created ON tasks (model_name, created_at);

CREATE TABLE task_counts (
  task_type  TEXT    NOT NULL,
  model_name TEXT    NOT NULL,
  status     TEXT    NOT NULL,
  current    INTEGER NOT NULL,  -- tasks in this status now
  total      INTEGER NOT NULL,  -- transitions into this status, ever (only goes up)
  PRIMARY KEY (task_type, model_name, status)
) WITHOUT ROWID;

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
  INSERT INTO task_counts (task_type, model_name, status, current, total)
  VALUES (NEW.task_type, NEW.model_name, NEW.status, 1, 1)
  ON CONFLICT (task_type, model_name, status) DO UPDATE SET current = current + 1, total = total + 1;
END;

CREATE TRIGGER tasks_count_update AFTER UPDATE OF status ON tasks WHEN OLD.status <> NEW.status BEGIN
  UPDATE task_counts SET current = current - 1
   WHERE task_type = OLD.task_type AND model_name = OLD.model_name AND status = OLD.status;
  INSERT INTO task_counts (task_type, model_name, status, current, total)
  VALUES (NEW.task_type, NEW.model_name, NEW.status, 1, 1)
  ON CONFLICT (task_type, model_name, status) DO UPDATE SET current = current + 1, total = total + 1;
END;

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
  UPDATE task_counts SET current = current - 1
   WHERE task_type = OLD.task_type AND model_name = OLD.model_name AND status = OLD.status;
END;

-- A one-row table written by health checks after a failed commit, to see if writes work again.
CREATE TABLE store_probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
