-- The daily cycle's record (src/index_builder/schedule).

-- name: next_cycle_id
SELECT nextval('schedule_cycle_ids');

-- name: record_schedule_step
INSERT INTO schedule_runs
    (cycle_id, step, session, status, attempts, started_at, finished_at, duration_ms, message)
VALUES ($cycle_id, $step, $session, $status, $attempts, $started_at, $finished_at,
        $duration_ms, $message);

-- name: schedule_runs
SELECT cycle_id, step, session, status, attempts, started_at, finished_at, duration_ms, message
FROM schedule_runs
WHERE cycle_id > (SELECT coalesce(max(cycle_id), 0) FROM schedule_runs) - $cycles
ORDER BY cycle_id DESC, started_at, step;
