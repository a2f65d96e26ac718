-- Returns a held task to the queue without spending an attempt. Params: id, lease_token, now.
UPDATE tasks
   SET status = 'pending', attempts = max(attempts - 1, 0), started_at = NULL, worker_id = NULL,
       lease_token = NULL, lease_expires_at = NULL, progress = NULL, updated_at = :now
 WHERE id = :id AND lease_token = :lease_token AND status = 'running';
