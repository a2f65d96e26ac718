-- Inserts one task already leased to a waiting worker (attempt 1), as a create followed by a
-- lease would leave it, without the pending row's index entries in between.
-- Params, by position: the twelve of insert_task.sql, then worker_id, lease_token,
--   lease_expires_at, started_at (the created_at).
-- Its first event (pending) is derived from the row (implicit_first_event, migration 009).
INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority,
                   max_attempts, timeout_ms, created_at, updated_at, webhook_url, webhook_events,
                   worker_id, lease_token, lease_expires_at, started_at, attempts, implicit_first_event)
VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1)
