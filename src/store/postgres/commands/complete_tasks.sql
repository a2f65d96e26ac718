-- Finishes held leases successfully, one per element of the parameter arrays: the
-- completions of one turn of the event loop in one statement. A row whose token no longer
-- holds the lease is not updated and not returned. Params (arrays): $1 id, $2 lease_token,
-- $3 result (JSON text), $4 now.
UPDATE tasks AS t
   SET status = 'completed', result = u.result::jsonb, completed_at = u.now, updated_at = u.now,
       progress = 1, lease_token = NULL, lease_expires_at = NULL
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(id, lease_token, result, now)
 WHERE t.id = u.id AND t.lease_token = u.lease_token AND t.status = 'running'
RETURNING t.*;
