-- Extends a held lease and records progress. Params: id, lease_token, lease_expires_at, progress, now.
UPDATE tasks
   SET lease_expires_at = :lease_expires_at, progress = coalesce(:progress, progress), updated_at = :now
 WHERE id = :id AND lease_token = :lease_token AND status = 'running';
