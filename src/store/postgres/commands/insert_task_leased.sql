-- Inserts one task already leased to a waiting worker (attempt 1), in one statement. The row
-- triggers log and count it as running when the statement ends; the pending move before it is
-- logged and counted here, so the log reads pending, then running, as for any lease.
-- Params: the twelve of insert_task.sql, then $13 worker_id, $14 lease_token, $15 lease_expires_at.
WITH t AS (
  INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority,
                     max_attempts, timeout_ms, created_at, updated_at, webhook_url, webhook_events,
                     worker_id, lease_token, lease_expires_at, started_at, attempts)
  VALUES ($1, 'running', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $9, 1)
  RETURNING *
), logged AS (
  INSERT INTO task_events (task_id, type, status, at) SELECT id, 'status', 'pending', created_at FROM t
), hooked AS (
  INSERT INTO webhook_deliveries (task_id, event, url, next_attempt_at, created_at)
  SELECT id, 'pending', webhook_url, created_at, created_at FROM t
   WHERE webhook_url IS NOT NULL AND webhook_events ? 'pending'
)
SELECT t.* FROM t, LATERAL (SELECT task_counts_bump(t.task_type, t.model_name, 'pending', 0, 1)) AS counted;
