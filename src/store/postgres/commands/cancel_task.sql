-- Cancels a pending or running task, reporting the status it had. The lease token stays so
-- the worker learns of the cancel instead of a stale lease. Params: $1 id, $2 now.
WITH before AS (SELECT seq, status FROM tasks WHERE id = $1 FOR UPDATE)
UPDATE tasks t
   SET status = 'cancelled', cancelled_at = $2, completed_at = $2, updated_at = $2, lease_expires_at = NULL
  FROM before
 WHERE t.seq = before.seq AND before.status IN ('pending', 'running')
RETURNING t.*, before.status AS previous_status;
