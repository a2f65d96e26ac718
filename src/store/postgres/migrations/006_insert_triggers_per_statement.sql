-- A create fired two row triggers, each a PL/pgSQL call per row (the counters' upsert and the
-- status event): with the creates of one turn in one INSERT, that was two calls for every
-- task. Inserts now fire one statement trigger each, over the statement's new rows: one
-- upsert per (task_type, model, status) and one INSERT ... SELECT for the events and webhook
-- deliveries. Status changes and deletes keep their row triggers (a trigger with transition
-- tables cannot be limited to the status column, and would copy every heartbeat's rows).
DROP TRIGGER tasks_count ON tasks;
CREATE TRIGGER tasks_count AFTER UPDATE OF status OR DELETE ON tasks
  FOR EACH ROW EXECUTE FUNCTION tasks_count_trigger();

CREATE FUNCTION tasks_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_counts (task_type, model_name, status, shard, current, total)
  SELECT task_type, model_name, status, (pg_backend_pid() % 16)::smallint, count(*), count(*)
    FROM inserted
   GROUP BY task_type, model_name, status
  ON CONFLICT (task_type, model_name, status, shard)
  DO UPDATE SET current = task_counts.current + EXCLUDED.current, total = task_counts.total + EXCLUDED.total;
  RETURN NULL;
END;
$$;
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION tasks_count_inserted();

DROP TRIGGER tasks_events ON tasks;
CREATE TRIGGER tasks_events AFTER UPDATE OF status ON tasks
  FOR EACH ROW EXECUTE FUNCTION task_events_trigger();

CREATE FUNCTION task_events_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_events (task_id, type, status, at)
  SELECT id, 'status', status, updated_at FROM inserted ORDER BY seq;
  INSERT INTO webhook_deliveries (task_id, event, url, next_attempt_at, created_at)
  SELECT id, status, webhook_url, updated_at, updated_at FROM inserted
   WHERE webhook_url IS NOT NULL AND webhook_events ? status
   ORDER BY seq;
  RETURN NULL;
END;
$$;
CREATE TRIGGER tasks_events_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION task_events_inserted();
