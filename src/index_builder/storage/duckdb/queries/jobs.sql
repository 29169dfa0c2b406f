-- The API's job records (table api_jobs, migration v10_jobs; src/index_builder/api/jobs.py).

-- name: insert_job
INSERT INTO api_jobs
    (job_id, kind, request, status, stage, progress, created_at, started_at, finished_at,
     result, error)
VALUES ($job_id, $kind, $request, $status, $stage, $progress, $created_at, $started_at,
        $finished_at, $result, $error);

-- name: update_job
UPDATE api_jobs
SET status = $status, stage = $stage, progress = $progress, started_at = $started_at,
    finished_at = $finished_at, result = $result, error = $error
WHERE job_id = $job_id;

-- name: interrupt_jobs
-- Jobs of a process that is gone: they will never finish.
UPDATE api_jobs
SET error = json_object('type', 'interrupted', 'status', 503,
                        'detail', 'the server stopped while the job was ' || status
                                  || '; it will not finish: submit the request again',
                        'field', NULL)::VARCHAR,
    status = 'interrupted', stage = 'interrupted', finished_at = $at
WHERE status IN ('queued', 'running');

-- name: recent_jobs
SELECT job_id, kind, request, status, stage, progress, created_at, started_at, finished_at,
       result, error
FROM api_jobs
ORDER BY created_at DESC, job_id
LIMIT $keep;

-- name: trim_jobs
-- Keep the newest $keep jobs (the API holds at most that many).
DELETE FROM api_jobs
WHERE job_id NOT IN (SELECT job_id FROM api_jobs ORDER BY created_at DESC, job_id LIMIT $keep);

-- name: delete_job
DELETE FROM api_jobs WHERE job_id = $job_id;
