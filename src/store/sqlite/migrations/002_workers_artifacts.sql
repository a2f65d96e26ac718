-- Registered workers (remote and embedded) and binary task outputs.
CREATE TABLE workers (
  id            TEXT    PRIMARY KEY,
  models        TEXT    NOT NULL,  -- JSON [{task_type, model_name}]
  concurrency   INTEGER NOT NULL,
  hardware      TEXT    NOT NULL,  -- JSON
  registered_at INTEGER NOT NULL,
  last_seen_at  INTEGER NOT NULL
);

CREATE TABLE artifacts (
  task_id      TEXT    NOT NULL,
  name         TEXT    NOT NULL,
  content_type TEXT    NOT NULL,
  size         INTEGER NOT NULL,
  data         BLOB    NOT NULL,
  created_at   INTEGER NOT NULL,
  PRIMARY KEY (task_id, name)
);
