-- Records one delivery attempt. Params: id, ok (0/1), status_code, error, retry_at (NULL gives up), now.
UPDATE webhook_deliveries
   SET attempts = attempts + 1, last_status_code = :status_code, last_error = :error,
       state = CASE WHEN :ok = 1 THEN 'delivered' WHEN :retry_at IS NULL THEN 'failed' ELSE 'pending' END,
       delivered_at = CASE WHEN :ok = 1 THEN :now ELSE NULL END,
       next_attempt_at = coalesce(:retry_at, next_attempt_at)
 WHERE id = :id;
