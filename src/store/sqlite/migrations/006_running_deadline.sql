-- The timeout reaper looks up running tasks by deadline; without this index it scanned every
-- running task once a second, holding the write lock and the event loop meanwhile.
CREATE INDEX tasks_running_deadline ON tasks (started_at + timeout_ms) WHERE status = 'running';
