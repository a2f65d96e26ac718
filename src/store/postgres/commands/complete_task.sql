-- Finishes a held lease successfully. Params: $1 id, $2 lease_token, $3 result, $4 now.
UPDATE tasks
   SET status = 'completed', result = $3, completed_at = $4, updated_at = $4,
       progress = 1, lease_token = NULL, lease_expires_at = NULL
 WHERE id = $1 AND lease_token = $2 AND status = 'running'
RETURNING *;
