-- Current and all-time counts per (task_type, model_name, status).
SELECT task_type, model_name, status, current, total FROM task_counts;
