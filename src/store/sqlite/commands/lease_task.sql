-- Moves one pending task to running under a fresh lease (fencing token).
-- Params: seq, worker_id, lease_token, lease_expires_at, now.
UPDATE tasks
   SET status = 'running', worker_id = :worker_id, lease_token = :lease_token,
       lease_expires_at = :lease_expires_at, started_at = :now, updated_at = :now,
       attempts = attempts + 1, progress = NULL
 WHERE seq = :seq AND status = 'pending';
