-- Pending tasks of the same model that lease before this one. Params: id, model_name, task_type, priority.
SELECT count(*) AS n FROM tasks
 WHERE status = 'pending' AND model_name = :model_name AND task_type = :task_type
   AND (priority > :priority
        OR (priority = :priority AND seq < (SELECT seq FROM tasks WHERE id = :id)));
