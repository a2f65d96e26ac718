-- Running tasks whose lease ran out. Params: now, limit.
-- INDEXED BY: without statistics the planner preferred a scan of every running task.
SELECT seq FROM tasks INDEXED BY tasks_lease_expiry
 WHERE status = 'running' AND lease_expires_at < :now
 ORDER BY lease_expires_at
 LIMIT :limit;
