-- Running tasks whose lease ran out. Params: now, limit.
SELECT seq FROM tasks
 WHERE status = 'running' AND lease_expires_at < :now
 ORDER BY lease_expires_at
 LIMIT :limit;
