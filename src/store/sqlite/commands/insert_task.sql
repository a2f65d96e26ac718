-- Inserts one pending task.
-- Params: id, task_type, model_name, input_data (JSON), parameters (JSON), priority,
--         max_attempts, timeout_ms, created_at.
INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority,
                   max_attempts, timeout_ms, created_at, updated_at)
VALUES (:id, 'pending', :task_type, :model_name, :input_data, :parameters, :priority,
        :max_attempts, :timeout_ms, :created_at, :created_at)
RETURNING *;
