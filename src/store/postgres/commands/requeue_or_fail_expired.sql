-- Requeues running tasks whose lease ran out, or fails them once their attempts are spent.
-- Params: $1 now, $2 limit.
UPDATE tasks t
   SET status = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,
       completed_at = CASE WHEN attempts < max_attempts THEN NULL ELSE $1::bigint END,
       started_at = CASE WHEN attempts < max_attempts THEN NULL ELSE started_at END,
       worker_id = CASE WHEN attempts < max_attempts THEN NULL ELSE worker_id END,
       error_code = CASE WHEN attempts < max_attempts THEN error_code ELSE 'LEASE_EXPIRED' END,
       error_message = CASE WHEN attempts < max_attempts THEN error_message
                       ELSE 'Worker stopped heartbeating on every attempt (' || attempts || ' of ' || max_attempts || ')' END,
       lease_token = NULL, lease_expires_at = NULL, progress = NULL, updated_at = $1
 WHERE seq IN (SELECT seq FROM tasks WHERE status = 'running' AND lease_expires_at < $1
                ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
   AND status = 'running' AND lease_expires_at < $1
RETURNING *;
