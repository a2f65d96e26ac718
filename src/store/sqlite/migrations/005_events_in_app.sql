-- A SQLite trigger that reads NEW/OLD makes every UPDATE of a task build whole old and new
-- rows; that cost more than the write itself. The store now writes the status event and any
-- webhook delivery in the same transaction as each transition, as it does for the counts.
DROP TRIGGER task_events_insert;
DROP TRIGGER task_events_status;
DROP TRIGGER webhook_on_insert;
DROP TRIGGER webhook_on_status;
