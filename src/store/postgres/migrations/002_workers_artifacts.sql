-- Registered workers (remote and embedded) and binary task outputs.
CREATE TABLE workers (
  id            TEXT    PRIMARY KEY,
  models        JSONB   NOT NULL,  -- [{task_type, model_name}]
  concurrency   INTEGER NOT NULL,
  hardware      JSONB   NOT NULL,
  registered_at BIGINT  NOT NULL,
  last_seen_at  BIGINT  NOT NULL
);

CREATE TABLE artifacts (
  task_id      TEXT   NOT NULL,
  name         TEXT   NOT NULL,
  content_type TEXT   NOT NULL,
  size         BIGINT NOT NULL,
  data         BYTEA  NOT NULL,
  created_at   BIGINT NOT NULL,
  PRIMARY KEY (task_id, name)
);
