-- Requeues one expired lease, or fails it once its attempts are spent. Params: seq, now.
UPDATE tasks
   SET status = CASE WHEN attempts < max_attempts THEN 'pending' ELSE 'failed' END,
       completed_at = CASE WHEN attempts < max_attempts THEN NULL ELSE :now END,
       started_at = CASE WHEN attempts < max_attempts THEN NULL ELSE started_at END,
       worker_id = CASE WHEN attempts < max_attempts THEN NULL ELSE worker_id END,
       error_code = CASE WHEN attempts < max_attempts THEN error_code ELSE 'LEASE_EXPIRED' END,
       error_message = CASE WHEN attempts < max_attempts THEN error_message
                       ELSE 'Worker stopped heartbeating on every attempt (' || attempts || ' of ' || max_attempts || ')' END,
       lease_token = NULL, lease_expires_at = NULL, progress = NULL, updated_at = :now
 WHERE seq = :seq AND status = 'running' AND lease_expires_at < :now;
