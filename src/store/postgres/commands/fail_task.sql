-- Fails a held lease: back to pending when retryable and attempts remain, else failed.
-- Params: $1 id, $2 lease_token, $3 retryable, $4 error_code, $5 error_message, $6 now.
UPDATE tasks
   SET status = CASE WHEN $3::boolean AND attempts < max_attempts THEN 'pending' ELSE 'failed' END,
       completed_at = CASE WHEN $3::boolean AND attempts < max_attempts THEN NULL ELSE $6::bigint END,
       started_at = CASE WHEN $3::boolean AND attempts < max_attempts THEN NULL ELSE started_at END,
       worker_id = CASE WHEN $3::boolean AND attempts < max_attempts THEN NULL ELSE worker_id END,
       error_code = $4, error_message = $5, updated_at = $6::bigint,
       lease_token = NULL, lease_expires_at = NULL
 WHERE id = $1 AND lease_token = $2 AND status = 'running'
RETURNING *;
