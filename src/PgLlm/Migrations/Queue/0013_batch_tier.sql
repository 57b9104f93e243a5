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

DROP FUNCTION llm.register_task(text, text, text, text[], text[], text[], text[], text, text, json, text, integer,
                                double precision, integer, regproc, regproc, regproc, text, text[]);

-- A task's registry row, as its table's script declares it, with its tier (a script generated before this step
-- registers its tasks as live).
CREATE FUNCTION llm.register_task(name text, table_schema text, table_name text, key_columns text[], read_columns text[],
                                  target_columns text[], image_columns text[], prompt text, system_prompt text, json_schema json,
                                  model text, max_attempts integer, temperature double precision, max_output_tokens integer,
                                  enqueue_function regproc, inputs_function regproc, complete_function regproc, definition_hash text,
                                  after text[] DEFAULT '{}', tier text DEFAULT 'live')
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH was AS (SELECT t.tier FROM llm.task AS t WHERE t.name = $1),
         registered AS (
    INSERT INTO llm.task AS t (name, table_schema, table_name, key_columns, read_columns, target_columns, image_columns, prompt,
                               system_prompt, json_schema, model, max_attempts, temperature, max_output_tokens,
                               enqueue_function, inputs_function, complete_function, definition_hash, after, tier)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, coalesce($19, '{}'), coalesce($20, 'live'))
    ON CONFLICT ON CONSTRAINT task_pkey DO UPDATE
       SET (table_schema, table_name, key_columns, read_columns, target_columns, image_columns, prompt, system_prompt,
            json_schema, model, max_attempts, temperature, max_output_tokens, enqueue_function, inputs_function,
            complete_function, definition_hash, after, tier, updated_at)
         = ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, coalesce($19, '{}'), coalesce($20, 'live'), now())
    RETURNING t.tier)
    -- A task moved to another tier takes its waiting jobs along (a re-run's keep their run's tier).
    UPDATE llm.job AS j
       SET priority = CASE WHEN r.tier = 'batch' THEN 2 ELSE 0 END
      FROM registered AS r, was AS w
     WHERE w.tier <> r.tier AND j.task = $1 AND j.state = 'pending' AND j.run_id IS NULL
       AND j.priority = CASE WHEN r.tier = 'batch' THEN 0 ELSE 2 END;
$fn$;

REVOKE ALL ON FUNCTION llm.register_task(text, text, text, text[], text[], text[], text[], text, text, json, text, integer,
                                         double precision, integer, regproc, regproc, regproc, text, text[], text)
  FROM PUBLIC;

-- Step 11's llm.supersede: the re-enqueued job stays in the batch tier when the superseded one was in it (or its
-- task is a batch-tier task); else it is live work, as before.
CREATE OR REPLACE FUNCTION llm.supersede(p_job_id bigint, p_current_hash text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $fn$
DECLARE
    v_job llm.job;
BEGIN
    UPDATE llm.job AS j
       SET state = 'superseded', finished_at = now(), locked_by = NULL, lease_until = NULL, answer = NULL,
           last_error = 'the inputs changed while the model was answering; the newer values get their own job'
     WHERE j.id = p_job_id
 RETURNING * INTO v_job;
    PERFORM 1 FROM llm.job AS r
     WHERE r.id IN (SELECT p.id FROM llm.job AS p WHERE p.state = 'pending' AND p.task = v_job.task AND p.row_key = v_job.row_key
                    UNION ALL
                    SELECT q.id FROM llm.job AS q WHERE q.state = 'running' AND q.task = v_job.task AND q.row_key = v_job.row_key)
       AND r.id <> p_job_id AND r.state IN ('pending', 'running')
       FOR UPDATE OF r;
    IF FOUND OR EXISTS (SELECT 1 FROM llm.job AS s
                         WHERE s.id > p_job_id AND s.task = v_job.task AND s.row_key = v_job.row_key
                           AND s.state IS NOT DISTINCT FROM 'succeeded' AND s.inputs_hash IS NOT DISTINCT FROM p_current_hash) THEN
        RETURN 'superseded';
    END IF;
    INSERT INTO llm.job (task, row_key, max_attempts, priority, run_id)
    VALUES (v_job.task, v_job.row_key, v_job.max_attempts,
            CASE WHEN v_job.priority = 2 OR EXISTS (SELECT 1 FROM llm.task AS t WHERE t.name = v_job.task AND t.tier = 'batch') THEN 2 ELSE 0 END,
            v_job.run_id)
    ON CONFLICT (task, row_key) WHERE state = 'pending' DO NOTHING;
    IF FOUND THEN
        PERFORM llm.wake_workers();
    END IF;
    RETURN 'superseded';
END
$fn$;

-- Step 11's re-run functions with a tier: a run started with p_tier 'batch' (pgllm rerun --batch) enqueues its
-- jobs at priority 2, for the batch tier; resuming a run sets its tier for the rows still to enqueue.
DROP FUNCTION llm.run_start(text, text, bigint, numeric, numeric);
CREATE FUNCTION llm.run_start(p_task text, p_which text, p_sample bigint, p_percent numeric, p_max_cost numeric, p_tier text DEFAULT 'live')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_id bigint;
BEGIN
    IF p_sample IS NOT NULL AND p_percent IS NOT NULL THEN
        RAISE EXCEPTION 'a re-run takes --sample or --percent, not both' USING ERRCODE = '22023';
    END IF;
    -- One start of a task's re-run at a time: two callers find (or make) the same run.
    PERFORM pg_advisory_xact_lock(hashtext('llm.run_start'), hashtext(p_task));
    SELECT r.id INTO v_id
      FROM llm.run AS r
     WHERE r.task = p_task AND r.kind = 'rerun' AND r.finished_at IS NULL AND r.selection = p_which
       AND r.sample IS NOT DISTINCT FROM p_sample AND r.percent IS NOT DISTINCT FROM p_percent
     ORDER BY r.id DESC
     LIMIT 1;
    IF FOUND THEN
        UPDATE llm.run AS r SET max_cost = p_max_cost, tier = coalesce(p_tier, 'live'), updated_at = now() WHERE r.id = v_id;
        RETURN v_id;
    END IF;
    INSERT INTO llm.run (task, kind, selection, sample, percent, max_cost, tier)
    VALUES (p_task, 'rerun', p_which, p_sample, p_percent, p_max_cost, coalesce(p_tier, 'live'))
    RETURNING id INTO v_id;
    INSERT INTO llm.run_row (run_id, n, row_key)
    SELECT v_id, s.n, s.row_key FROM llm.run_select(p_task, p_which, p_sample, p_percent) AS s;
    UPDATE llm.run AS r SET rows = (SELECT count(*) FROM llm.run_row AS w WHERE w.run_id = v_id) WHERE r.id = v_id;
    RETURN v_id;
END
$fn$;

CREATE OR REPLACE FUNCTION llm.run_enqueue(p_run bigint, p_limit integer, OUT enqueued integer, OUT skipped integer, OUT done boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run llm.run;
    v_task llm.task;
    v_walked integer;
    v_added integer;
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'llm.run_enqueue: the limit must be at least 1' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_run FROM llm.run AS r WHERE r.id = p_run FOR UPDATE;
    IF NOT FOUND OR v_run.kind <> 'rerun' THEN
        RAISE EXCEPTION 'there is no re-run %', p_run USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO v_task FROM llm.task AS t WHERE t.name = v_run.task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % is not declared (llm.task has no such row)', v_run.task USING ERRCODE = 'P0002';
    END IF;
    WITH batch AS (
        SELECT w.row_key,
               CASE v_run.selection
                   WHEN 'stale' THEN v.definition_hash IS DISTINCT FROM v_task.definition_hash
                   ELSE v.task IS NULL END AS wanted
          FROM llm.run_row AS w
          LEFT JOIN llm.row_version AS v ON v.task = v_run.task AND v.row_key = w.row_key
         WHERE w.run_id = p_run AND w.n > v_run.position AND w.n <= v_run.position + p_limit
    ), added AS (
        INSERT INTO llm.job (task, row_key, max_attempts, priority, run_id)
        SELECT v_run.task, b.row_key, v_task.max_attempts, CASE WHEN v_run.tier = 'batch' THEN 2 ELSE 1 END, p_run
          FROM batch AS b
         WHERE b.wanted
           AND NOT EXISTS (SELECT 1 FROM llm.job AS j WHERE j.task = v_run.task AND j.row_key = b.row_key AND j.state = 'pending')
           AND NOT EXISTS (SELECT 1 FROM llm.job AS j WHERE j.task = v_run.task AND j.row_key = b.row_key AND j.state = 'running')
        ON CONFLICT (task, row_key) WHERE state = 'pending' DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM batch)::integer, (SELECT count(*) FROM added)::integer INTO v_walked, v_added;
    UPDATE llm.run AS r
       SET position = r.position + v_walked, enqueued = r.enqueued + v_added, skipped = r.skipped + v_walked - v_added,
           updated_at = now()
     WHERE r.id = p_run
    RETURNING r.position >= r.rows INTO done;
    enqueued := v_added;
    skipped := v_walked - v_added;
    IF v_added > 0 THEN
        PERFORM pg_notify('pgllm_jobs', '');
    END IF;
END
$fn$;

-- Step 11's llm.backfill with a tier (pgllm backfill --batch): its jobs from now on go to the batch tier (priority 2).
DROP FUNCTION llm.backfill(text, boolean, integer, boolean);
CREATE FUNCTION llm.backfill(p_task text, p_only_empty boolean DEFAULT true, p_batch integer DEFAULT 1000, p_restart boolean DEFAULT false,
                             p_tier text DEFAULT 'live')
RETURNS TABLE (scanned integer, enqueued integer, total_scanned bigint, total_enqueued bigint, done boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_task     llm.task;
    v_state    llm.backfill;
    v_table    text;
    v_keys     text;
    v_key_obj  text;
    v_key_cols text;
    v_key_desc text;
    v_after    text;
    v_wanted   text;
    v_scanned  integer;
    v_enqueued integer;
    v_last     jsonb;
    v_run      bigint;
BEGIN
    IF p_batch IS NULL OR p_batch < 1 THEN
        RAISE EXCEPTION 'llm.backfill: the batch size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_task FROM llm.task AS t WHERE t.name = p_task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'llm.backfill: unknown task %', p_task
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'SELECT name FROM llm.task lists the tasks.';
    END IF;

    INSERT INTO llm.backfill AS b (task, only_empty)
    VALUES (p_task, p_only_empty)
    ON CONFLICT (task) DO NOTHING;
    SELECT * INTO v_state FROM llm.backfill AS b WHERE b.task = p_task FOR UPDATE;
    IF p_restart OR v_state.only_empty IS DISTINCT FROM p_only_empty OR v_state.finished_at IS NOT NULL THEN
        IF v_state.run_id IS NOT NULL THEN
            PERFORM llm.run_finish(v_state.run_id, 'started over');
        END IF;
        UPDATE llm.backfill AS b
           SET only_empty = p_only_empty, last_key = NULL, scanned = 0, enqueued = 0,
               started_at = now(), updated_at = now(), finished_at = NULL, run_id = NULL
         WHERE b.task = p_task
        RETURNING * INTO v_state;
    END IF;
    v_run := v_state.run_id;
    IF v_run IS NULL THEN
        INSERT INTO llm.run (task, kind, selection, tier)
        VALUES (p_task, 'backfill', CASE WHEN p_only_empty THEN 'empty' ELSE 'all' END, coalesce(p_tier, 'live'))
        RETURNING id INTO v_run;
        UPDATE llm.backfill AS b SET run_id = v_run WHERE b.task = p_task;
    ELSE
        UPDATE llm.run AS r SET tier = coalesce(p_tier, 'live') WHERE r.id = v_run AND r.tier IS DISTINCT FROM coalesce(p_tier, 'live');
    END IF;

    v_table := format('%I.%I', v_task.table_schema, v_task.table_name);
    SELECT string_agg(format('t.%I', c), ', ' ORDER BY o),
           string_agg(format('%L, t.%I', c, c), ', ' ORDER BY o),
           string_agg(format('t.%I AS k%s', c, o), ', ' ORDER BY o),
           string_agg(format('b.k%s DESC', o), ', ' ORDER BY o)
      INTO v_keys, v_key_obj, v_key_cols, v_key_desc
      FROM unnest(v_task.key_columns) WITH ORDINALITY AS k(c, o);
    v_after := CASE WHEN v_state.last_key IS NULL THEN 'true'
                    ELSE format('(%s) > (SELECT %s FROM jsonb_populate_record(NULL::%s, $3) AS t)', v_keys, v_keys, v_table) END;
    SELECT coalesce(string_agg(format('t.%I IS NOT NULL', c), ' AND '), 'true')
      INTO v_wanted
      FROM unnest(v_task.read_columns) AS r(c);
    IF p_only_empty THEN
        SELECT v_wanted || ' AND (' || string_agg(format('t.%I IS NULL', c), ' OR ') || ')'
          INTO v_wanted
          FROM unnest(v_task.target_columns) AS g(c);
    END IF;

    EXECUTE format(
        'WITH batch AS (
             SELECT %6$s, jsonb_build_object(%1$s) AS row_key, (%2$s) AS wanted
               FROM %3$s AS t
              WHERE %4$s
              ORDER BY %5$s
              LIMIT $4
         ), added AS (
             INSERT INTO llm.job (task, row_key, max_attempts, priority, run_id)
             SELECT $1, b.row_key, $2, $6, $5
               FROM batch AS b
              WHERE b.wanted
                AND NOT EXISTS (SELECT 1 FROM llm.job AS j
                                 WHERE j.task = $1 AND j.row_key = b.row_key AND j.state = ''pending'')
                AND NOT EXISTS (SELECT 1 FROM llm.job AS j
                                 WHERE j.task = $1 AND j.row_key = b.row_key AND j.state = ''running'')
             ON CONFLICT (task, row_key) WHERE state = ''pending'' DO NOTHING
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM batch)::integer,
                (SELECT count(*) FROM added)::integer,
                (SELECT b.row_key FROM batch AS b ORDER BY %7$s LIMIT 1)',
        v_key_obj, v_wanted, v_table, v_after, v_keys, v_key_cols, v_key_desc)
      INTO v_scanned, v_enqueued, v_last
     USING p_task, v_task.max_attempts, v_state.last_key, p_batch, v_run, CASE WHEN p_tier = 'batch' THEN 2 ELSE 1 END;

    UPDATE llm.backfill AS b
       SET last_key = coalesce(v_last, b.last_key),
           scanned = b.scanned + v_scanned,
           enqueued = b.enqueued + v_enqueued,
           updated_at = now(),
           finished_at = CASE WHEN v_scanned < p_batch THEN now() END
     WHERE b.task = p_task
    RETURNING * INTO v_state;
    UPDATE llm.run AS r
       SET position = v_state.scanned, rows = v_state.scanned, enqueued = v_state.enqueued,
           skipped = v_state.scanned - v_state.enqueued, updated_at = now()
     WHERE r.id = v_run;
    IF v_scanned < p_batch THEN
        PERFORM llm.run_finish(v_run, 'done');
    END IF;
    IF v_enqueued > 0 THEN
        PERFORM pg_notify('pgllm_jobs', '');
    END IF;
    RETURN QUERY SELECT v_scanned, v_enqueued, v_state.scanned, v_state.enqueued, v_scanned < p_batch;
END
$fn$;

REVOKE ALL ON FUNCTION llm.run_start(text, text, bigint, numeric, numeric, text), llm.backfill(text, boolean, integer, boolean, text) FROM PUBLIC;

-- The batch worker's bookkeeping: a token names the batch at the provider (its input file pgllm-<token>.jsonl and
-- the batch's metadata), so a worker that died after an upload or a create finds the file or batch again instead
-- of making a second; a lease says which worker moves the batch on (another takes it over once it runs out).
ALTER TABLE llm.batch
    ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN lease_until timestamptz;

-- The price of a task's tokens (step 4), at batch prices on a session of the batch tier (pgllm.price_tier =
-- 'batch'): the model's batch prices, else half its prices.
CREATE OR REPLACE FUNCTION llm.task_price(p_task text, OUT definition_hash text, OUT input_per_million numeric, OUT output_per_million numeric)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_batch boolean := current_setting('pgllm.price_tier', true) = 'batch';
BEGIN
    SELECT t.definition_hash INTO definition_hash FROM llm.task AS t WHERE t.name = p_task;
    SELECT CASE WHEN v_batch THEN coalesce(mp.batch_input_per_million, mp.input_per_million / 2) ELSE mp.input_per_million END,
           CASE WHEN v_batch THEN coalesce(mp.batch_output_per_million, mp.output_per_million / 2) ELSE mp.output_per_million END
      INTO input_per_million, output_per_million
      FROM llm.model_price AS mp
     WHERE mp.model = coalesce((SELECT t.model FROM llm.task AS t WHERE t.name = p_task), '*') OR mp.model = '*'
     ORDER BY mp.model = '*'
     LIMIT 1;
END
$fn$;

-- Starts a batch of p_tasks' batch-tier jobs (one endpoint and model) when there are p_max_lines of them ready, or
-- the oldest has waited p_max_wait_seconds, or p_now: takes up to p_max_lines of them (running, held by the batch
-- under a lease of p_lease_seconds, their attempt and batch tries counted) and returns the batch; NULL when it is
-- not time yet or nothing is ready. Paused tasks' jobs wait.
CREATE FUNCTION llm.batch_take(p_worker text, p_endpoint text, p_model text, p_tasks text[], p_max_lines integer,
                               p_max_wait_seconds double precision, p_lease_seconds double precision, p_batch_lease_seconds double precision,
                               p_now boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_except text[] := llm.paused_except(NULL);
    v_ready integer;
    v_oldest timestamptz;
    v_batch bigint;
    v_lines integer;
BEGIN
    SELECT count(*), min(s.scheduled_at) INTO v_ready, v_oldest
      FROM (SELECT c.scheduled_at FROM llm.job AS c
             WHERE c.state = 'pending' AND c.priority = 2 AND c.scheduled_at <= now() AND c.task = ANY (p_tasks)
               AND (v_except IS NULL OR c.task <> ALL (v_except))
             LIMIT p_max_lines) AS s;
    IF v_ready = 0 OR NOT (p_now OR v_ready >= p_max_lines OR v_oldest <= now() - make_interval(secs => p_max_wait_seconds)) THEN
        RETURN NULL;
    END IF;
    INSERT INTO llm.batch (endpoint, model, worker, lease_until)
    VALUES (coalesce(p_endpoint, ''), p_model, p_worker, now() + make_interval(secs => p_batch_lease_seconds))
    RETURNING id INTO v_batch;
    UPDATE llm.job AS j
       SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), locked_by = 'pgllm-batch-' || v_batch,
           lease_until = now() + make_interval(secs => p_lease_seconds), batch_id = v_batch, batch_tries = j.batch_tries + 1
     WHERE j.id = ANY (ARRAY(SELECT c.id FROM llm.job AS c
                              WHERE c.state = 'pending' AND c.priority = 2 AND c.scheduled_at <= now() AND c.task = ANY (p_tasks)
                                AND (v_except IS NULL OR c.task <> ALL (v_except))
                              ORDER BY c.scheduled_at, c.id
                              LIMIT p_max_lines
                                FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS v_lines = ROW_COUNT;
    IF v_lines = 0 THEN
        DELETE FROM llm.batch AS b WHERE b.id = v_batch;
        RETURN NULL;
    END IF;
    UPDATE llm.batch AS b SET lines = v_lines WHERE b.id = v_batch;
    RETURN v_batch;
END
$fn$;

-- The open batches this worker moves on now: its own, and those whose worker's lease ran out (taken over); each
-- leased to p_worker for p_lease_seconds.
CREATE FUNCTION llm.batch_lease(p_worker text, p_lease_seconds double precision)
RETURNS SETOF llm.batch
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE llm.batch AS b
       SET worker = p_worker, lease_until = now() + make_interval(secs => p_lease_seconds)
     WHERE b.id = ANY (ARRAY(SELECT o.id FROM llm.batch AS o
                              WHERE o.state NOT IN ('done', 'failed', 'expired', 'cancelled')
                                AND (o.worker = p_worker OR o.lease_until IS NULL OR o.lease_until < now())
                              ORDER BY o.id
                                FOR UPDATE SKIP LOCKED))
    RETURNING b.*;
$fn$;

-- Records a batch's step: its state and whatever the step learned (NULL leaves a field as it is).
CREATE FUNCTION llm.batch_step(p_batch bigint, p_worker text, p_state text, p_input_file_id text DEFAULT NULL,
                               p_provider_batch_id text DEFAULT NULL, p_provider_status text DEFAULT NULL, p_bytes bigint DEFAULT NULL,
                               p_output_file_id text DEFAULT NULL, p_error_file_id text DEFAULT NULL, p_expected_by timestamptz DEFAULT NULL,
                               p_error text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE llm.batch AS b
       SET state = p_state,
           input_file_id = coalesce(p_input_file_id, b.input_file_id),
           provider_batch_id = coalesce(p_provider_batch_id, b.provider_batch_id),
           provider_status = coalesce(p_provider_status, b.provider_status),
           bytes = coalesce(p_bytes, b.bytes),
           output_file_id = coalesce(p_output_file_id, b.output_file_id),
           error_file_id = coalesce(p_error_file_id, b.error_file_id),
           expected_by = coalesce(p_expected_by, b.expected_by),
           error = coalesce(p_error, b.error),
           submitted_at = CASE WHEN p_state = 'submitted' THEN coalesce(b.submitted_at, now()) ELSE b.submitted_at END,
           polled_at = CASE WHEN p_provider_status IS NOT NULL THEN now() ELSE b.polled_at END,
           finished_at = CASE WHEN p_state IN ('done', 'failed', 'expired', 'cancelled') THEN now() ELSE b.finished_at END,
           lease_until = CASE WHEN p_state IN ('done', 'failed', 'expired', 'cancelled') THEN NULL ELSE b.lease_until END
     WHERE b.id = p_batch AND b.worker = p_worker
    RETURNING true;
$fn$;

-- Ends a batch once its output and error files were settled: the jobs it still holds (lines missing from both
-- files, or never answered: an expired, cancelled or failed batch) are given back. p_outcome 'completed': a missing
-- line is a failed attempt (retried); otherwise the attempt is not spent. A job that has had p_max_tries batches
-- goes on to the normal path (priority 1) when it is retried. Counts the lines and sets the batch's final state.
CREATE FUNCTION llm.batch_finish(p_batch bigint, p_worker text, p_outcome text, p_max_tries integer,
                                 p_succeeded integer, p_failed integer, p_error text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $fn$
DECLARE
    v_job record;
    v_missing integer := 0;
    v_state text;
BEGIN
    FOR v_job IN
        SELECT j.id, j.attempt FROM llm.job AS j
         WHERE j.batch_id = p_batch AND j.state = 'running' AND j.locked_by = 'pgllm-batch-' || p_batch
         ORDER BY j.id
    LOOP
        IF p_outcome = 'completed' THEN
            v_state := llm.fail(v_job.id, v_job.attempt, 'the batch''s output had no line for this job', 0, 'transient');
        ELSE
            v_state := llm.release(v_job.id, v_job.attempt);
        END IF;
        v_missing := v_missing + 1;
    END LOOP;
    UPDATE llm.job AS j SET priority = 1
     WHERE j.batch_id = p_batch AND j.state = 'pending' AND j.priority = 2 AND j.batch_tries >= p_max_tries;
    UPDATE llm.batch AS b
       SET state = CASE p_outcome WHEN 'completed' THEN 'done' WHEN 'expired' THEN 'expired' WHEN 'cancelled' THEN 'cancelled' ELSE 'failed' END,
           succeeded = p_succeeded, failed = p_failed, missing = CASE WHEN p_outcome = 'completed' THEN v_missing ELSE 0 END,
           error = coalesce(p_error, b.error), finished_at = now(), lease_until = NULL
     WHERE b.id = p_batch AND b.worker = p_worker;
    RETURN v_missing;
END
$fn$;

-- The batches in flight and lately finished, for pgllm status and the metrics.
CREATE FUNCTION llm.batch_status()
RETURNS TABLE (id bigint, endpoint text, model text, state text, provider_status text, lines integer, succeeded integer,
               failed integer, missing integer, created_at timestamptz, submitted_at timestamptz, expected_by timestamptz,
               finished_at timestamptz, cancel_requested boolean, error text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT b.id, b.endpoint, b.model, b.state, b.provider_status, b.lines, b.succeeded, b.failed, b.missing, b.created_at,
           b.submitted_at, b.expected_by, b.finished_at, b.cancel_requested_at IS NOT NULL, b.error
      FROM llm.batch AS b
     WHERE b.state NOT IN ('done', 'failed', 'expired', 'cancelled') OR b.finished_at > now() - interval '1 day'
     ORDER BY b.id;
$fn$;

CREATE INDEX batch_recent ON llm.batch (finished_at) WHERE finished_at IS NOT NULL;

-- A worker that stops gracefully lets go of its open batches: the next worker takes them over at once.
CREATE FUNCTION llm.batch_let_go(p_worker text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE llm.batch AS b SET lease_until = NULL
     WHERE b.worker = p_worker AND b.state NOT IN ('done', 'failed', 'expired', 'cancelled');
$fn$;

REVOKE ALL ON FUNCTION llm.batch_take(text, text, text, text[], integer, double precision, double precision, double precision, boolean),
                       llm.batch_lease(text, double precision),
                       llm.batch_step(bigint, text, text, text, text, text, bigint, text, text, timestamptz, text),
                       llm.batch_finish(bigint, text, text, integer, integer, integer, text),
                       llm.batch_status(), llm.batch_let_go(text)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION llm.batch_take(text, text, text, text[], integer, double precision, double precision, double precision, boolean),
                          llm.batch_lease(text, double precision),
                          llm.batch_step(bigint, text, text, text, text, text, bigint, text, text, timestamptz, text),
                          llm.batch_finish(bigint, text, text, integer, integer, integer, text),
                          llm.batch_status(), llm.batch_let_go(text)
   TO pgllm_worker;
