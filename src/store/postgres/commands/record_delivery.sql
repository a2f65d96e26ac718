-- Records one delivery attempt. Params: $1 id, $2 ok, $3 status_code, $4 error, $5 retry_at (NULL gives up), $6 now.
UPDATE webhook_deliveries
   SET attempts = attempts + 1, last_status_code = $3, last_error = $4,
       state = CASE WHEN $2::boolean THEN 'delivered' WHEN $5::bigint IS NULL THEN 'failed' ELSE 'pending' END,
       delivered_at = CASE WHEN $2::boolean THEN $6::bigint ELSE NULL END,
       next_attempt_at = coalesce($5::bigint, next_attempt_at)
 WHERE id = $1;
