-- Provider ingestion: resumable runs and provider-level rejects.

-- name: stored_sessions
-- The (symbol, date) pairs already stored for some symbols in a window: a re-run
-- fetches only the sessions still missing.
SELECT symbol, date
FROM prices
WHERE date BETWEEN $start AND $end AND list_contains($symbols, symbol)
ORDER BY symbol, date;

-- name: quarantine_provider_reject
-- A provider's failure for a symbol (unknown symbol, HTML page, malformed or empty
-- payload, outage): quarantined with the run, never stored as data.
INSERT INTO quarantine (run_id, source, row_number, date, symbol, reason, record)
VALUES ($run_id, 'provider', NULL, NULL, $symbol, $reason,
        to_json(struct_pack(provider := $provider, message := $message, snippet := $snippet)));

-- name: set_run_outcome
-- The status (succeeded | partial | failed) and summary of a provider ingestion run.
UPDATE ingest_runs SET status = $status, message = $message WHERE run_id = $run_id;
