-- Claims due webhook deliveries for a while. Params: now, limit, claimed_until.
UPDATE webhook_deliveries
   SET next_attempt_at = :claimed_until
 WHERE id IN (SELECT id FROM webhook_deliveries
               WHERE state = 'pending' AND next_attempt_at <= :now
               ORDER BY next_attempt_at LIMIT :limit)
RETURNING *;
