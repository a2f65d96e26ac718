-- Mean run time per model over recent completions (bounded, so start-up stays fast at
-- millions of rows). Params: limit (rows per model), window (recent completed rows scanned).
SELECT task_type, model_name, avg(completed_at - started_at) AS mean_ms, count(*) AS samples
  FROM (SELECT task_type, model_name, started_at, completed_at,
               row_number() OVER (PARTITION BY task_type, model_name ORDER BY created_at DESC) AS rn
          FROM (SELECT task_type, model_name, started_at, completed_at, created_at
                  FROM tasks WHERE status = 'completed' AND started_at IS NOT NULL
                 ORDER BY created_at DESC LIMIT :window))
 WHERE rn <= :limit
 GROUP BY task_type, model_name;
