-- Extends held leases and records progress, one per element of the parameter arrays: the
-- heartbeats of one turn of the event loop in one statement. A row whose token no longer
-- holds the lease is not updated and not returned. Params (arrays): $1 id, $2 lease_token,
-- $3 lease_expires_at, $4 progress (NULL keeps it), $5 now.
UPDATE tasks AS t
   SET lease_expires_at = u.lease_expires_at, progress = coalesce(u.progress, t.progress), updated_at = u.now
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::float8[], $5::bigint[]) AS u(id, lease_token, lease_expires_at, progress, now)
 WHERE t.id = u.id AND t.lease_token = u.lease_token AND t.status = 'running'
RETURNING t.*;
