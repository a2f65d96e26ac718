-- Inserts one pending task.
-- Params, by position (InsertRow in src/store/rows.ts): id, task_type, model_name, input_data (JSON),
--   parameters (JSON), priority, max_attempts, timeout_ms, created_at, updated_at (the same),
--   webhook_url, webhook_events (JSON or NULL).
-- Its first event is derived from the row (implicit_first_event, migration 009).
INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority,
                   max_attempts, timeout_ms, created_at, updated_at, webhook_url, webhook_events,
                   implicit_first_event)
VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
