-- Inserts one pending task.
-- Params (InsertRow in src/store/rows.ts): $1 id, $2 task_type, $3 model_name, $4 input_data,
--         $5 parameters, $6 priority, $7 max_attempts, $8 timeout_ms, $9 created_at,
--         $10 updated_at (the same), $11 webhook_url, $12 webhook_events.
INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority,
                   max_attempts, timeout_ms, created_at, updated_at, webhook_url, webhook_events)
VALUES ($1, 'pending', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING *;
