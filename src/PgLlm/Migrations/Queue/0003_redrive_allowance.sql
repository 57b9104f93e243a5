-- PgLlm queue, step 3: a re-driven job gets a fresh allowance of bad answers.
-- llm.retry_failed keeps a job's error history and marks the re-drive in it ("event": "retried after
-- failing"). llm.fail counted every earlier 'invalid' entry of the history, so a job that had died of
-- bad answers failed again on its first new one. It now counts only the entries after the last re-drive.
CREATE OR REPLACE FUNCTION llm.fail(p_job_id bigint, p_attempt integer, p_error text, p_retry_in_seconds double precision, p_kind text DEFAULT 'transient')
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_job llm.job;
    v_invalid integer;
    v_final boolean;
BEGIN
    -- By key, then checked once locked (see llm.settle).
    SELECT * INTO v_job FROM llm.job AS j WHERE j.id = p_job_id FOR UPDATE;
    IF NOT FOUND OR v_job.state <> 'running' OR v_job.attempt <> p_attempt THEN
        RETURN 'lost';
    END IF;
    IF p_kind NOT IN ('transient', 'invalid', 'permanent') THEN
        RAISE EXCEPTION 'llm.fail: unknown failure kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The bad answers since the job was last re-driven (or since it was enqueued), this one included.
    SELECT count(*) FILTER (WHERE e.entry->>'kind' = 'invalid'
                              AND e.n > coalesce(r.last_redrive, 0)) + 1
      INTO v_invalid
      FROM jsonb_array_elements(v_job.errors) WITH ORDINALITY AS e(entry, n),
           (SELECT max(x.n) AS last_redrive
              FROM jsonb_array_elements(v_job.errors) WITH ORDINALITY AS x(entry, n)
             WHERE x.entry->>'event' = 'retried after failing') AS r;
    v_final := p_kind = 'permanent'
            OR p_attempt >= v_job.max_attempts
            OR (p_kind = 'invalid' AND v_invalid >= least(v_job.max_attempts, 3));
    RETURN llm.settle(p_job_id, p_attempt, CASE WHEN v_final THEN 'failed' ELSE 'pending' END,
                      p_error, p_retry_in_seconds, p_kind);
END
$fn$;
