-- Fails running tasks that outlived their timeout plus a grace period. Params: $1 now, $2 grace_ms, $3 limit.
UPDATE tasks
   SET status = 'failed', completed_at = $1, updated_at = $1,
       error_code = 'TIMEOUT', error_message = 'Task exceeded its timeout of ' || (timeout_ms / 1000) || ' s',
       lease_token = NULL, lease_expires_at = NULL
 WHERE seq IN (SELECT seq FROM tasks WHERE status = 'running' AND started_at + timeout_ms < $1::bigint - $2::bigint
                LIMIT $3 FOR UPDATE SKIP LOCKED)
   AND status = 'running'
RETURNING *;
