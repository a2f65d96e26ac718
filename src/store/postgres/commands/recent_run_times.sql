-- Mean run time per model over recent completions. Params: $1 rows per model, $2 recent rows scanned.
SELECT task_type, model_name, avg(completed_at - started_at)::float8 AS mean_ms, count(*)::int AS samples
  FROM (SELECT task_type, model_name, started_at, completed_at,
               row_number() OVER (PARTITION BY task_type, model_name ORDER BY created_at DESC) AS rn
          FROM (SELECT task_type, model_name, started_at, completed_at, created_at
                  FROM tasks WHERE status = 'completed' AND started_at IS NOT NULL
                 ORDER BY created_at DESC LIMIT $2) recent) ranked
 WHERE rn <= $1
 GROUP BY task_type, model_name;
