-- Leases up to $3 pending tasks of the served (model, type) pairs, highest priority then
-- oldest, skipping rows another transaction holds; each gets its own fencing token.
-- Params: $1 model_names[], $2 task_types[], $3 limit, $4 worker_id, $5 lease_expires_at, $6 now.
WITH candidates AS (
  SELECT c.seq, c.priority
    FROM unnest($1::text[], $2::text[]) AS m(model_name, task_type)
    CROSS JOIN LATERAL (
      SELECT seq, priority FROM tasks
       WHERE status = 'pending' AND model_name = m.model_name AND task_type = m.task_type
       ORDER BY priority DESC, seq
       LIMIT $3
       FOR UPDATE SKIP LOCKED
    ) c
   ORDER BY c.priority DESC, c.seq
   LIMIT $3
)
UPDATE tasks t
   SET status = 'running', worker_id = $4, lease_token = replace(gen_random_uuid()::text, '-', ''),
       lease_expires_at = $5, started_at = $6, updated_at = $6, attempts = t.attempts + 1, progress = NULL
  FROM candidates
 WHERE t.seq = candidates.seq
RETURNING t.*;
