-- The counters' upsert in PL/pgSQL: a LANGUAGE sql function called from a trigger is parsed
-- and planned again on every call, PL/pgSQL keeps its plan for the session. Same signature,
-- so the trigger that calls it is unchanged.
CREATE OR REPLACE FUNCTION task_counts_bump(t TEXT, m TEXT, s TEXT, d_current BIGINT, d_total BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_counts (task_type, model_name, status, shard, current, total)
  VALUES (t, m, s, (pg_backend_pid() % 16)::smallint, d_current, d_total)
  ON CONFLICT (task_type, model_name, status, shard)
  DO UPDATE SET current = task_counts.current + EXCLUDED.current, total = task_counts.total + EXCLUDED.total;
END;
$$;
