-- A task's first event (id 1: status pending, at its creation) says nothing its row does not:
-- tasks created from now on do not store it, and reads derive it from the row. Of the b-trees
-- a create wrote, that was one (and its WAL frames in every commit). Rows created before keep
-- theirs (0 here): their log is stored whole, under the ids it had.
ALTER TABLE tasks ADD COLUMN implicit_first_event INTEGER NOT NULL DEFAULT 0
  CHECK (implicit_first_event = 0 OR implicit_first_event = 1);
