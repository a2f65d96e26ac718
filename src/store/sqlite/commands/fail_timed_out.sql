-- Fails running tasks that outlived their timeout plus a grace period. Params: now, grace_ms, limit.
UPDATE tasks
   SET status = 'failed', completed_at = :now, updated_at = :now,
       error_code = 'TIMEOUT', error_message = 'Task exceeded its timeout of ' || (timeout_ms / 1000) || ' s',
       lease_token = NULL, lease_expires_at = NULL
 WHERE seq IN (SELECT seq FROM tasks INDEXED BY tasks_running_deadline
                WHERE status = 'running' AND started_at + timeout_ms < :now - :grace_ms LIMIT :limit)
RETURNING *;
