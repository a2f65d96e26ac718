-- Fails a held lease: back to pending when retryable and attempts remain, else failed.
-- Params: id, lease_token, retryable (0/1), error_code, error_message, now.
UPDATE tasks
   SET status = CASE WHEN :retryable = 1 AND attempts < max_attempts THEN 'pending' ELSE 'failed' END,
       completed_at = CASE WHEN :retryable = 1 AND attempts < max_attempts THEN NULL ELSE :now END,
       started_at = CASE WHEN :retryable = 1 AND attempts < max_attempts THEN NULL ELSE started_at END,
       worker_id = CASE WHEN :retryable = 1 AND attempts < max_attempts THEN NULL ELSE worker_id END,
       error_code = :error_code, error_message = :error_message, updated_at = :now,
       lease_token = NULL, lease_expires_at = NULL
 WHERE id = :id AND lease_token = :lease_token AND status = 'running';
