-- One task by id. Params: $1 id.
SELECT * FROM tasks WHERE id = $1;
