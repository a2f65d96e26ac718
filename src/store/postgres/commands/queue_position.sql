-- Pending tasks of the same model that lease before this one. Params: $1 id, $2 model_name, $3 task_type, $4 priority.
SELECT count(*)::bigint AS n FROM tasks
 WHERE status = 'pending' AND model_name = $2 AND task_type = $3
   AND (priority > $4 OR (priority = $4 AND seq < (SELECT seq FROM tasks WHERE id = $1)));
