-- Finishes a held lease successfully. Params: id, lease_token, result (JSON), now.
UPDATE tasks
   SET status = 'completed', result = :result, completed_at = :now, updated_at = :now,
       progress = 1, lease_token = NULL, lease_expires_at = NULL
 WHERE id = :id AND lease_token = :lease_token AND status = 'running';
