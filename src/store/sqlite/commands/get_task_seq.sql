-- One task by its row number. Params: seq.
SELECT * FROM tasks WHERE seq = :seq;
