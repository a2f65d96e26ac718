-- Claims due webhook deliveries for a while, skipping rows another node is claiming.
-- Params: $1 now, $2 limit, $3 claimed_until.
UPDATE webhook_deliveries d
   SET next_attempt_at = $3
 WHERE d.id IN (SELECT id FROM webhook_deliveries
                 WHERE state = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING d.*;
