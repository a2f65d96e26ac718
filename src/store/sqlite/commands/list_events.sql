-- A task's log after an event id, in id order. A task created since migration 009 does not
-- store its first event (id 1: status pending at its creation): it is read from the row.
-- Params: :taskId, :afterId, :limit.
SELECT id AS task_id, 1 AS id, 'status' AS type, 'pending' AS status, NULL AS progress, NULL AS text, created_at AS at
  FROM tasks
 WHERE id = :taskId AND implicit_first_event = 1 AND :afterId < 1
UNION ALL
SELECT task_id, id, type, status, progress, text, at
  FROM task_events
 WHERE task_id = :taskId AND id > :afterId
ORDER BY id
LIMIT :limit
