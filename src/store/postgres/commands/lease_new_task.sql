-- Leases a task inserted in the same transaction to the worker waiting for it (attempt 1).
-- Params: $1 id, $2 worker_id, $3 lease_token, $4 lease_expires_at, $5 now (its created_at).
UPDATE tasks
   SET status = 'running', worker_id = $2, lease_token = $3, lease_expires_at = $4,
       started_at = $5, updated_at = $5, attempts = attempts + 1
 WHERE id = $1 AND status = 'pending'
RETURNING *;
