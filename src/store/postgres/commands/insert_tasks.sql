-- Inserts pending tasks, one per element of the parameter arrays and in their order: the
-- creates of one turn of the event loop, in one statement and one commit. Returns the ids
-- inserted (the store has the rest).
-- Params: the columns of insert_task.sql as arrays, without updated_at (= created_at):
--         $1 id, $2 task_type, $3 model_name, $4 input_data (JSON text), $5 parameters (JSON
--         text), $6 priority, $7 max_attempts, $8 timeout_ms, $9 created_at, $10 webhook_url,
--         $11 webhook_events (JSON text or null).
INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority,
                   max_attempts, timeout_ms, created_at, updated_at, webhook_url, webhook_events)
SELECT id, 'pending', task_type, model_name, input_data::jsonb, parameters::jsonb, priority,
       max_attempts, timeout_ms, created_at, created_at, webhook_url, webhook_events::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[],
            $8::bigint[], $9::bigint[], $10::text[], $11::text[])
     WITH ORDINALITY AS u(id, task_type, model_name, input_data, parameters, priority,
                          max_attempts, timeout_ms, created_at, webhook_url, webhook_events, n)
ORDER BY n
RETURNING id;
