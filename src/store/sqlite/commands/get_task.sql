-- One task by id. Params: id.
SELECT * FROM tasks WHERE id = :id;
