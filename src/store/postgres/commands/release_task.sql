-- Returns a held task to the queue without spending an attempt. Params: $1 id, $2 lease_token, $3 now.
UPDATE tasks
   SET status = 'pending', attempts = greatest(attempts - 1, 0), started_at = NULL, worker_id = NULL,
       lease_token = NULL, lease_expires_at = NULL, progress = NULL, updated_at = $3
 WHERE id = $1 AND lease_token = $2 AND status = 'running'
RETURNING *;
