-- Inserts one pending task.
-- Params: id, task_type, model_name, input_data (JSON), parameters (JSON), priority,
--         max_attempts, timeout_ms, created_at, webhook_url, webhook_events (JSON or NULL).
INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority,
                   max_attempts, timeout_ms, created_at, updated_at, webhook_url, webhook_events)
VALUES (:id, 'pending', :task_type, :model_name, :input_data, :parameters, :priority,
        :max_attempts, :timeout_ms, :created_at, :created_at, :webhook_url, :webhook_events)
