-- Tasks, their indexes, and sharded per-(type, model, status) counters kept by triggers so
-- that /health, /metrics and list totals never count rows. Each connection writes its own
-- counter shard, so concurrent transactions do not queue on one hot row.
CREATE TABLE tasks (
  seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id               TEXT    NOT NULL UNIQUE,
  status           TEXT    NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
  task_type        TEXT    NOT NULL,
  model_name       TEXT    NOT NULL,
  input_data       JSONB   NOT NULL,
  parameters       JSONB   NOT NULL,
  priority         INTEGER NOT NULL DEFAULT 0,
  attempts         INTEGER NOT NULL DEFAULT 0,
  max_attempts     INTEGER NOT NULL,
  timeout_ms       BIGINT  NOT NULL,
  created_at       BIGINT  NOT NULL,
  started_at       BIGINT,
  completed_at     BIGINT,
  cancelled_at     BIGINT,
  updated_at       BIGINT  NOT NULL,
  worker_id        TEXT,
  lease_token      TEXT,
  lease_expires_at BIGINT,
  progress         DOUBLE PRECISION,
  result           JSONB,
  error_code       TEXT,
  error_message    TEXT
);

CREATE INDEX tasks_lease ON tasks (model_name, task_type, priority DESC, seq) WHERE status = 'pending';
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_status_created ON tasks (status, created_at, seq);
CREATE INDEX tasks_created ON tasks (created_at, seq);
CREATE INDEX tasks_type_created ON tasks (task_type, created_at, seq);
CREATE INDEX tasks_model_created ON tasks (model_name, created_at, seq);

CREATE TABLE task_counts (
  task_type  TEXT     NOT NULL,
  model_name TEXT     NOT NULL,
  status     TEXT     NOT NULL,
  shard      SMALLINT NOT NULL,
  current    BIGINT   NOT NULL,
  total      BIGINT   NOT NULL,
  PRIMARY KEY (task_type, model_name, status, shard)
);

CREATE FUNCTION task_counts_bump(t TEXT, m TEXT, s TEXT, d_current BIGINT, d_total BIGINT) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO task_counts (task_type, model_name, status, shard, current, total)
  VALUES (t, m, s, (pg_backend_pid() % 16)::smallint, d_current, d_total)
  ON CONFLICT (task_type, model_name, status, shard)
  DO UPDATE SET current = task_counts.current + EXCLUDED.current, total = task_counts.total + EXCLUDED.total;
$$;

CREATE FUNCTION tasks_count_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM task_counts_bump(NEW.task_type, NEW.model_name, NEW.status, 1, 1);
  ELSIF TG_OP = 'UPDATE' THEN
    IF OLD.status <> NEW.status THEN
      PERFORM task_counts_bump(OLD.task_type, OLD.model_name, OLD.status, -1, 0);
      PERFORM task_counts_bump(NEW.task_type, NEW.model_name, NEW.status, 1, 1);
    END IF;
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM task_counts_bump(OLD.task_type, OLD.model_name, OLD.status, -1, 0);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_count AFTER INSERT OR UPDATE OF status OR DELETE ON tasks
  FOR EACH ROW EXECUTE FUNCTION tasks_count_trigger();

-- Shared rate-limit counters for every node. UNLOGGED: no WAL per request, and losing
-- the counts in a database crash only resets a window.
CREATE UNLOGGED TABLE rate_limits (
  key       TEXT   NOT NULL,
  window_ms BIGINT NOT NULL,
  reset_at  BIGINT NOT NULL,
  count     BIGINT NOT NULL,
  PRIMARY KEY (key, window_ms)
);

-- Counts one request against each window of a key; a request over any limit is refused
-- and not counted. The upsert locks the key's rows, so concurrent nodes serialize here.
CREATE FUNCTION rate_limit_hit(p_key TEXT, p_windows BIGINT[], p_limits BIGINT[], p_now BIGINT)
RETURNS TABLE (o_window_ms BIGINT, o_reset_at BIGINT, o_count BIGINT, o_allowed BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
  ok BOOLEAN;
BEGIN
  INSERT INTO rate_limits AS r (key, window_ms, reset_at, count)
  SELECT p_key, w, p_now + w, 0 FROM unnest(p_windows) AS w
  ON CONFLICT (key, window_ms) DO UPDATE
     SET reset_at = CASE WHEN r.reset_at <= p_now THEN EXCLUDED.reset_at ELSE r.reset_at END,
         count = CASE WHEN r.reset_at <= p_now THEN 0 ELSE r.count END;
  SELECT bool_and(r.count < l.lim) INTO ok
    FROM rate_limits r JOIN unnest(p_windows, p_limits) AS l(w, lim) ON r.window_ms = l.w
   WHERE r.key = p_key;
  IF ok THEN
    UPDATE rate_limits r SET count = r.count + 1 WHERE r.key = p_key AND r.window_ms = ANY (p_windows);
  END IF;
  RETURN QUERY SELECT r.window_ms, r.reset_at, r.count, ok
    FROM rate_limits r WHERE r.key = p_key AND r.window_ms = ANY (p_windows);
END;
$$;

-- A one-row table written by health checks to prove writes commit.
CREATE TABLE store_probe (id INTEGER PRIMARY KEY, at BIGINT NOT NULL);
