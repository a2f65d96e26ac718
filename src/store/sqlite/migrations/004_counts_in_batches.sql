-- Per-row count triggers cost more than the rest of a write. The store now adds each group
-- commit's status moves to task_counts itself, once per (type, model, status), in the same
-- transaction. Deleting rows (retention) still keeps the counts by trigger.
DROP TRIGGER tasks_count_insert;
DROP TRIGGER tasks_count_update;
