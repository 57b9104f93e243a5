-- PgLlm queue, step 13: the batch tier, and pausing a task.
--   * llm.job.priority gains a third value, 2: the batch tier. Such jobs are never taken by llm.claim (the
--     normal path); a batch worker collects them into a provider's batch (OpenAI's Batch API: a JSONL file
--     of requests, answered within hours at about half the price). A task declared Tier = LlmTier.Batch
--     enqueues its jobs at priority 2 (llm.task.tier = 'batch'); a re-run or backfill with --batch does so
--     for its jobs (llm.run.tier). A live change of a row whose job waits in the batch tier makes that job
--     live work, as it does a re-run's (the enqueue trigger of a live task sets priority 0).
--   * llm.batch: one row per batch submitted (or being submitted), with the provider's ids (input file,
--     batch, output and error files), its state, counts and times. Jobs in a batch are running, held by the
--     batch (llm.job.batch_id) under a lease that outlives the batch's completion window.
--   * llm.job.batch_tries: how many batches a job went into; a job whose line failed or was missing is
--     retried in a later batch, and on the normal path (priority 1) once it has had its batch tries.
--   * llm.model_price gains batch prices (NULL: half the normal price).
--   * llm.task.paused_at: a paused task's jobs are not claimed (by any worker, the in-database one too) until
--     llm.resume_task; llm.pause_task / llm.resume_task set it.

ALTER TABLE llm.task
    ADD COLUMN tier text NOT NULL DEFAULT 'live' CHECK (tier IN ('live', 'batch')),
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN paused_by text;

COMMENT ON COLUMN llm.task.tier IS 'live: its jobs go through the normal path; batch: its jobs wait for the batch tier (priority 2), answered through the provider''s Batch API.';
COMMENT ON COLUMN llm.task.paused_at IS 'Set by llm.pause_task: no worker claims the task''s jobs until llm.resume_task.';

CREATE INDEX task_paused ON llm.task (name) WHERE paused_at IS NOT NULL;

ALTER TABLE llm.run ADD COLUMN tier text NOT NULL DEFAULT 'live' CHECK (tier IN ('live', 'batch'));

COMMENT ON COLUMN llm.run.tier IS 'live: the run''s jobs go through the normal path at priority 1; batch: through the batch tier (priority 2).';

ALTER TABLE llm.model_price
    ADD COLUMN batch_input_per_million numeric CHECK (batch_input_per_million >= 0),
    ADD COLUMN batch_output_per_million numeric CHECK (batch_output_per_million >= 0);

COMMENT ON COLUMN llm.model_price.batch_input_per_million IS 'The price per million input tokens answered through the batch tier; NULL: half of input_per_million.';

CREATE TABLE llm.batch (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint            text NOT NULL DEFAULT '',
    model               text NOT NULL,
    state               text NOT NULL DEFAULT 'preparing'
                        CHECK (state IN ('preparing', 'uploading', 'uploaded', 'submitted', 'settling', 'done', 'failed', 'expired', 'cancelled')),
    provider_status     text,
    worker              text,
    lines               integer NOT NULL DEFAULT 0,
    bytes               bigint,
    input_file_id       text,
    provider_batch_id   text,
    output_file_id      text,
    error_file_id       text,
    succeeded           integer NOT NULL DEFAULT 0,
    failed              integer NOT NULL DEFAULT 0,
    missing             integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    submitted_at        timestamptz,
    expected_by         timestamptz,
    polled_at           timestamptz,
    finished_at         timestamptz,
    cancel_requested_at timestamptz,
    cancel_requested_by text,
    error               text
);

COMMENT ON TABLE llm.batch IS 'Batches of the batch tier: preparing (jobs taken, lines being written), uploading, uploaded (input file known), submitted (the provider''s batch known, polled), settling (output being written), then done, failed, expired or cancelled.';

CREATE INDEX batch_open ON llm.batch (id) WHERE state NOT IN ('done', 'failed', 'expired', 'cancelled');

ALTER TABLE llm.job
    ADD COLUMN batch_id bigint,
    ADD COLUMN batch_tries smallint NOT NULL DEFAULT 0;

COMMENT ON COLUMN llm.job.batch_id IS 'The batch (llm.batch) that holds the running job; NULL for a job on the normal path.';
COMMENT ON COLUMN llm.job.batch_tries IS 'Batches the job went into: after the batch worker''s limit, a failed or missing line is retried on the normal path.';
COMMENT ON COLUMN llm.job.priority IS 'Claim order: 0 live work (inserts, updates), 1 re-runs and backfills, 2 the batch tier (never taken by llm.claim); lower first, then scheduled_at.';

CREATE INDEX job_batch ON llm.job (batch_id) WHERE batch_id IS NOT NULL;

-- Step 11's claim, without the batch tier's jobs (priority 2) and without paused tasks' jobs.
CREATE OR REPLACE FUNCTION llm.claim(p_worker text, p_limit integer, p_lease_seconds double precision, p_only text[], p_except text[])
RETURNS TABLE (id bigint, task text, row_key jsonb, attempt integer, max_attempts integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_except text[] := llm.paused_except(p_except);
BEGIN
    RETURN QUERY
    UPDATE llm.job AS j
       SET state = 'running',
           attempt = j.attempt + 1,
           attempted_at = now(),
           locked_by = p_worker,
           lease_until = now() + make_interval(secs => p_lease_seconds)
     WHERE j.id = ANY (ARRAY(SELECT c.id
                               FROM llm.job AS c
                              WHERE c.state = 'pending' AND c.priority < 2 AND c.scheduled_at <= now()
                                AND (p_only IS NULL OR c.task = ANY (p_only))
                                AND (v_except IS NULL OR c.task <> ALL (v_except))
                              ORDER BY c.priority, c.scheduled_at, c.id
                              LIMIT p_limit
                                FOR UPDATE SKIP LOCKED))
 RETURNING j.id, j.task, j.row_key, j.attempt, j.max_attempts::integer;
END
$fn$;

-- p_except with the paused tasks added (an index of the paused ones only: nothing to read while none is).
CREATE FUNCTION llm.paused_except(p_except text[])
RETURNS text[]
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $fn$
DECLARE
    v_paused text[];
BEGIN
    v_paused := ARRAY(SELECT t.name FROM llm.task AS t WHERE t.paused_at IS NOT NULL);
    IF cardinality(v_paused) = 0 THEN
        RETURN p_except;
    END IF;
    RETURN coalesce(p_except, '{}') || v_paused;
END
$fn$;

-- Step 11's worker claim, likewise: live work first, then at most p_low_limit re-run and backfill jobs (priority 1).
CREATE OR REPLACE FUNCTION llm.claim(p_worker text, p_limit integer, p_lease_seconds double precision, p_only text[], p_except text[], p_low_limit integer)
RETURNS TABLE (id bigint, task text, row_key jsonb, attempt integer, max_attempts integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_ids bigint[];
    v_except text[] := llm.paused_except(p_except);
BEGIN
    v_ids := ARRAY(SELECT c.id
                     FROM llm.job AS c
                    WHERE c.state = 'pending' AND c.priority = 0 AND c.scheduled_at <= now()
                      AND (p_only IS NULL OR c.task = ANY (p_only))
                      AND (v_except IS NULL OR c.task <> ALL (v_except))
                    ORDER BY c.scheduled_at, c.id
                    LIMIT p_limit
                      FOR UPDATE SKIP LOCKED);
    IF cardinality(v_ids) < p_limit AND p_low_limit > 0 THEN
        v_ids := v_ids || ARRAY(SELECT c.id
                                  FROM llm.job AS c
                                 WHERE c.state = 'pending' AND c.priority = 1 AND c.scheduled_at <= now()
                                   AND (p_only IS NULL OR c.task = ANY (p_only))
                                   AND (v_except IS NULL OR c.task <> ALL (v_except))
                                 ORDER BY c.scheduled_at, c.id
                                 LIMIT least(p_low_limit, p_limit - cardinality(v_ids))
                                   FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN QUERY
    UPDATE llm.job AS j
       SET state = 'running',
           attempt = j.attempt + 1,
           attempted_at = now(),
           locked_by = p_worker,
           lease_until = now() + make_interval(secs => p_lease_seconds)
     WHERE j.id = ANY (v_ids)
 RETURNING j.id, j.task, j.row_key, j.attempt, j.max_attempts::integer;
END
$fn$;

-- Pauses a task: no worker claims its jobs (pending ones wait; running ones finish) until llm.resume_task.
-- Returns false when it was paused already. An unknown task is an error.
CREATE FUNCTION llm.pause_task(p_task text, p_by text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM 1 FROM llm.task AS t WHERE t.name = p_task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'PgLlm has no task %', p_task USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE llm.task AS t SET paused_at = now(), paused_by = coalesce(p_by, session_user)
     WHERE t.name = p_task AND t.paused_at IS NULL;
    IF FOUND THEN
        PERFORM pg_notify('pgllm_tasks', '');
    END IF;
    RETURN FOUND;
END
$fn$;

-- Resumes a paused task: its jobs are claimed again at once. Returns false when it was not paused.
CREATE FUNCTION llm.resume_task(p_task text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM 1 FROM llm.task AS t WHERE t.name = p_task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'PgLlm has no task %', p_task USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE llm.task AS t SET paused_at = NULL, paused_by = NULL WHERE t.name = p_task AND t.paused_at IS NOT NULL;
    IF FOUND THEN
        PERFORM pg_notify('pgllm_tasks', '');
        PERFORM pg_notify('pgllm_jobs', '');
    END IF;
    RETURN FOUND;
END
$fn$;

-- Asks for a batch to be cancelled: the batch worker cancels it at the provider, then gives its jobs back to
-- pending (their attempt not spent) in the batch tier. Returns the batch's state; a finished batch is left
-- as it is. An unknown batch is an error.
CREATE FUNCTION llm.batch_cancel(p_batch bigint, p_by text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_state text;
BEGIN
    UPDATE llm.batch AS b
       SET cancel_requested_at = coalesce(b.cancel_requested_at, now()),
           cancel_requested_by = coalesce(b.cancel_requested_by, p_by, session_user)
     WHERE b.id = p_batch AND b.state NOT IN ('done', 'failed', 'expired', 'cancelled')
    RETURNING b.state INTO v_state;
    IF NOT FOUND THEN
        SELECT b.state INTO v_state FROM llm.batch AS b WHERE b.id = p_batch;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'PgLlm has no batch %', p_batch USING ERRCODE = 'no_data_found';
        END IF;
        RETURN v_state;
    END IF;
    PERFORM pg_notify('pgllm_batches', p_batch::text);
    RETURN v_state;
END
$fn$;

REVOKE ALL ON FUNCTION llm.paused_except(text[]), llm.pause_task(text, text), llm.resume_task(text), llm.batch_cancel(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION llm.paused_except(text[]) TO pgllm_worker;
GRANT SELECT ON llm.batch TO pgllm_worker;
