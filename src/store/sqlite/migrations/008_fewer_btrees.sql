-- Every commit rewrites, in the WAL, each b-tree page it touched, and a batch of creates touched
-- ten b-trees. Two of them carried nothing another did not:
--
-- tasks_created ordered every task by creation time. Rows get their seq in creation order
-- (one writer, creation times taken in the order writes are queued), so an unfiltered list by
-- creation time reads the table itself in seq order.
DROP INDEX tasks_created;

-- task_events was a rowid table with an index on (task_id, id) that every read used. Keyed by
-- (task_id, id) without a rowid, the rows live in that one b-tree. Event ids now count up per
-- task (a stream is resumed within its task); existing ids keep their values and order.
CREATE TABLE task_events_new (
  task_id  TEXT    NOT NULL,
  id       INTEGER NOT NULL,
  type     TEXT    NOT NULL CHECK (type = 'status' OR type = 'progress' OR type = 'output'),
  status   TEXT,
  progress REAL,
  text     TEXT,
  at       INTEGER NOT NULL,
  PRIMARY KEY (task_id, id)
) WITHOUT ROWID;
INSERT INTO task_events_new (task_id, id, type, status, progress, text, at)
  SELECT task_id, id, type, status, progress, text, at FROM task_events;
DROP TABLE task_events;
ALTER TABLE task_events_new RENAME TO task_events;
