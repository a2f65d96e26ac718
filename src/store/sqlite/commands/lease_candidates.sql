-- Pending tasks of one (model, type) in lease order. Params: model_name, task_type, limit.
SELECT seq, priority FROM tasks
 WHERE status = 'pending' AND model_name = :model_name AND task_type = :task_type
 ORDER BY priority DESC, seq
 LIMIT :limit;
