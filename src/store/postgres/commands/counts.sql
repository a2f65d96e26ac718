-- Current and all-time counts per (task_type, model_name, status), summed over shards.
SELECT task_type, model_name, status, sum(current)::bigint AS current, sum(total)::bigint AS total
  FROM task_counts GROUP BY task_type, model_name, status;
