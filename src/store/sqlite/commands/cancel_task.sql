-- Cancels a pending or running task. The lease token stays so the worker learns of the
-- cancel instead of a stale lease. Params: id, now.
UPDATE tasks
   SET status = 'cancelled', cancelled_at = :now, completed_at = :now, updated_at = :now,
       lease_expires_at = NULL
 WHERE id = :id AND status IN ('pending', 'running');
