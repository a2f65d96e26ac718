-- Extends a held lease and records progress. Params: $1 id, $2 lease_token, $3 lease_expires_at, $4 progress, $5 now.
UPDATE tasks
   SET lease_expires_at = $3, progress = coalesce($4, progress), updated_at = $5
 WHERE id = $1 AND lease_token = $2 AND status = 'running'
RETURNING *;
