-- The timeout reaper looks up running tasks by deadline.
CREATE INDEX tasks_running_deadline ON tasks ((started_at + timeout_ms)) WHERE status = 'running';
