-- PgLlm queue, step 11: live work first, and controlled re-runs.
--   * llm.job.priority: 0 for the jobs of inserts and updates (live work), 1 for re-runs and backfills. The claim
--     takes the lowest priority first, then the oldest schedule: a re-run of 100,000 rows never delays a live job
--     by more than the jobs already in flight. A live change to a row whose pending job is a re-run's promotes that
--     job to priority 0 (the tables' generated enqueue functions), and so does a superseded job's re-enqueue.
--   * llm.run: one row per re-run or backfill, with what it selected (llm.run_row: the rows, frozen when the run
--     starts, walked by position so that an interrupted run resumes where it stopped), its cost cap, and its jobs
--     tagged by llm.job.run_id, so that its progress and its spend (the sum of its jobs' estimated_cost) are one
--     indexed query (llm.run_progress).
--   * llm.run_start / llm.run_enqueue / llm.run_finish are what `pgllm rerun` calls; llm.backfill (step 1) enqueues
--     at priority 1 too and records its jobs under a run of kind 'backfill'.

ALTER TABLE llm.job
    ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS run_id bigint;

COMMENT ON COLUMN llm.job.priority IS 'Claim order: 0 live work (inserts, updates), 1 re-runs and backfills; lower first, then scheduled_at.';
COMMENT ON COLUMN llm.job.run_id IS 'The re-run or backfill (llm.run) that enqueued the job; NULL for live work.';

-- The claim's order: ready jobs by priority, then oldest schedule first (see llm.claim).
DROP INDEX IF EXISTS llm.job_ready;
CREATE INDEX job_ready ON llm.job (priority, scheduled_at, id) WHERE state = 'pending';
-- A run's jobs, for its progress and spend. Live jobs have no run and are not in it.
CREATE INDEX IF NOT EXISTS job_run ON llm.job (run_id) WHERE run_id IS NOT NULL;

-- Step 1's llm.claim, ordered by priority first. The plan still walks job_ready in order and stops at p_limit
-- (priority 0's ready jobs, then priority 1's); a retried job scheduled later sits in the walk between them and
-- is passed over in the index. Planner settings as in step 1.
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
                              WHERE c.state = 'pending' AND c.scheduled_at <= now()
                                AND (p_only IS NULL OR c.task = ANY (p_only))
                                AND (p_except IS NULL OR c.task <> ALL (p_except))
                              ORDER BY c.priority, c.scheduled_at, c.id
                              LIMIT p_limit
                                FOR UPDATE SKIP LOCKED))
 RETURNING j.id, j.task, j.row_key, j.attempt, j.max_attempts::integer;
END
$fn$;

-- The worker's claim: as above, but at most p_low_limit of the jobs it takes may be re-run or backfill jobs
-- (priority above 0). A worker keeps some of its calls for live work this way (PgLlm's worker: an eighth of its
-- concurrency): a re-run never fills every call, so a live job finds a free one at once instead of waiting for a
-- re-run's call to end. The live jobs are taken first, by job_ready's priority-0 range; the re-run's (by the rest of
-- the index) only when the live ones are fewer than p_limit.
CREATE FUNCTION llm.claim(p_worker text, p_limit integer, p_lease_seconds double precision, p_only text[], p_except text[], p_low_limit integer)
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
BEGIN
    v_ids := ARRAY(SELECT c.id
                     FROM llm.job AS c
                    WHERE c.state = 'pending' AND c.priority = 0 AND c.scheduled_at <= now()
                      AND (p_only IS NULL OR c.task = ANY (p_only))
                      AND (p_except IS NULL OR c.task <> ALL (p_except))
                    ORDER BY c.scheduled_at, c.id
                    LIMIT p_limit
                      FOR UPDATE SKIP LOCKED);
    IF cardinality(v_ids) < p_limit AND p_low_limit > 0 THEN
        v_ids := v_ids || ARRAY(SELECT c.id
                                  FROM llm.job AS c
                                 WHERE c.state = 'pending' AND c.priority > 0 AND c.scheduled_at <= now()
                                   AND (p_only IS NULL OR c.task = ANY (p_only))
                                   AND (p_except IS NULL OR c.task <> ALL (p_except))
                                 ORDER BY c.priority, c.scheduled_at, c.id
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

-- Step 4's llm.supersede: the re-enqueued job keeps the superseded one's run, and is live work (priority 0): the row's
-- inputs changed while the model answered, by a live change whose trigger found this job still pending.
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
    VALUES (v_job.task, v_job.row_key, v_job.max_attempts, 0, v_job.run_id)
    ON CONFLICT (task, row_key) WHERE state = 'pending' DO NOTHING;
    IF FOUND THEN
        PERFORM llm.wake_workers();
    END IF;
    RETURN 'superseded';
END
$fn$;

-- A re-run ('rerun': the rows llm.plan_rows selects, 'stale' or 'never_filled') or a backfill ('backfill': step 1's
-- walk of the table, selection 'empty' or 'all'). rows: the rows selected when it started (llm.run_row; a
-- backfill's are not listed: it walks the table); position: how many of them it has walked; enqueued / skipped:
-- jobs made, and rows passed over (current again, or with a job already pending or running).
CREATE TABLE llm.run (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('rerun', 'backfill')),
    selection   text NOT NULL CHECK (selection IN ('stale', 'never_filled', 'empty', 'all')),
    sample      bigint CHECK (sample >= 1),
    percent     numeric CHECK (percent > 0 AND percent <= 100),
    max_cost    numeric CHECK (max_cost >= 0),
    rows        bigint NOT NULL DEFAULT 0,
    position    bigint NOT NULL DEFAULT 0,
    enqueued    bigint NOT NULL DEFAULT 0,
    skipped     bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text
);

COMMENT ON TABLE llm.run IS 'Re-runs (pgllm rerun) and backfills (pgllm backfill): what each selected, how far it got, its cost cap; its jobs carry its id (llm.job.run_id).';

CREATE INDEX run_open ON llm.run (task, kind) WHERE finished_at IS NULL;

-- A re-run's rows, numbered in the order it enqueues them (n from 1).
CREATE TABLE llm.run_row (
    run_id  bigint NOT NULL REFERENCES llm.run (id) ON DELETE CASCADE,
    n       bigint NOT NULL,
    row_key jsonb NOT NULL,
    PRIMARY KEY (run_id, n)
);

-- Where a backfill's jobs are counted.
ALTER TABLE llm.backfill ADD COLUMN IF NOT EXISTS run_id bigint;

-- A row's place in a re-run's deterministic order: the first 8 hex digits of the MD5 of its key's jsonb text, as
-- a number in [0, 2^32). --sample N takes the N rows with the lowest; --percent P the rows below P% of the range
-- (so the same rows every time, whatever else the table holds).
CREATE FUNCTION llm.run_order(p_row_key jsonb)
RETURNS bigint
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ('x' || substr(md5(p_row_key::text), 1, 8))::bit(32)::bigint;
$fn$;

-- The rows a re-run of p_task would select: llm.plan_rows(p_task, p_which), each row kept with --percent when
-- its llm.run_order is below p_percent of the range, at most p_sample of them (NULL: all), in llm.run_order.
CREATE FUNCTION llm.run_select(p_task text, p_which text, p_sample bigint, p_percent numeric)
RETURNS TABLE (n bigint, row_key jsonb)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT row_number() OVER (ORDER BY s.ord, s.row_key::text), s.row_key
      FROM (SELECT p.row_key, llm.run_order(p.row_key) AS ord FROM llm.plan_rows(p_task, p_which) AS p) AS s
     WHERE p_percent IS NULL OR s.ord < p_percent / 100 * 4294967296
     ORDER BY s.ord, s.row_key::text
     LIMIT p_sample;
$fn$;

-- The re-run of p_task's p_which rows with this sample: the unfinished one with the same selection (resumed; its
-- cost cap becomes p_max_cost), else a new one with its rows listed now. Returns the run's id.
CREATE FUNCTION llm.run_start(p_task text, p_which text, p_sample bigint, p_percent numeric, p_max_cost numeric)
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
        UPDATE llm.run AS r SET max_cost = p_max_cost, updated_at = now() WHERE r.id = v_id;
        RETURN v_id;
    END IF;
    INSERT INTO llm.run (task, kind, selection, sample, percent, max_cost)
    VALUES (p_task, 'rerun', p_which, p_sample, p_percent, p_max_cost)
    RETURNING id INTO v_id;
    INSERT INTO llm.run_row (run_id, n, row_key)
    SELECT v_id, s.n, s.row_key FROM llm.run_select(p_task, p_which, p_sample, p_percent) AS s;
    UPDATE llm.run AS r SET rows = (SELECT count(*) FROM llm.run_row AS w WHERE w.run_id = v_id) WHERE r.id = v_id;
    RETURN v_id;
END
$fn$;

-- Enqueues the next p_limit rows of a re-run at priority 1, tagged with the run, and records how far it got in the
-- same transaction. A row is passed over (skipped) when it is no longer what the run selected (a 'stale' row
-- written by the current definition since, a 'never_filled' row written since) or already has a pending or running
-- job. Returns the jobs enqueued and the rows passed over by this call, and whether every row has been walked.
CREATE FUNCTION llm.run_enqueue(p_run bigint, p_limit integer, OUT enqueued integer, OUT skipped integer, OUT done boolean)
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
        SELECT v_run.task, b.row_key, v_task.max_attempts, 1, p_run
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

-- A run's progress and spend, from its jobs (one indexed query): jobs by state, and the tokens and estimated cost of
-- every attempt of them (NULL cost: no price known).
CREATE FUNCTION llm.run_progress(p_run bigint)
RETURNS TABLE (pending bigint, running bigint, succeeded bigint, failed bigint, other bigint,
               input_tokens bigint, output_tokens bigint, spent numeric)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT count(*) FILTER (WHERE j.state = 'pending'), count(*) FILTER (WHERE j.state = 'running'),
           count(*) FILTER (WHERE j.state = 'succeeded'), count(*) FILTER (WHERE j.state = 'failed'),
           count(*) FILTER (WHERE j.state IN ('superseded', 'skipped')),
           coalesce(sum(j.input_tokens), 0)::bigint, coalesce(sum(j.output_tokens), 0)::bigint, sum(j.estimated_cost)
      FROM llm.job AS j
     WHERE j.run_id = p_run;
$fn$;

-- What one job of p_task costs, for a re-run's cap: the average of the run's own answered jobs when it has some
-- (the current definition's cost), else of the task's latest 1,000 answered jobs priced now (llm.task_price).
-- NULL when neither is known: no answered job, or no price.
CREATE FUNCTION llm.run_job_cost(p_run bigint, p_task text, OUT cost numeric, OUT jobs bigint)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_price record;
BEGIN
    SELECT avg(j.estimated_cost), count(*) INTO cost, jobs
      FROM llm.job AS j
     WHERE j.run_id = p_run AND j.state = 'succeeded' AND j.estimated_cost IS NOT NULL;
    IF jobs > 0 THEN
        RETURN;
    END IF;
    SELECT * INTO v_price FROM llm.task_price(p_task);
    SELECT round((avg(h.input_tokens) * v_price.input_per_million + avg(h.output_tokens) * v_price.output_per_million) / 1000000, 10),
           count(*)
      INTO cost, jobs
      FROM (SELECT coalesce(j.input_tokens, 0) AS input_tokens, coalesce(j.output_tokens, 0) AS output_tokens
              FROM llm.job AS j
             WHERE j.state = 'succeeded' AND j.task = p_task AND (j.input_tokens IS NOT NULL OR j.output_tokens IS NOT NULL)
             ORDER BY j.finished_at DESC
             LIMIT 1000) AS h;
    IF jobs = 0 THEN
        cost := NULL;
    END IF;
END
$fn$;

-- Marks a run finished (p_outcome: 'done', or why it stopped); its jobs still pending run on.
CREATE FUNCTION llm.run_finish(p_run bigint, p_outcome text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE llm.run AS r SET finished_at = now(), updated_at = now(), outcome = p_outcome WHERE r.id = p_run AND r.finished_at IS NULL;
$fn$;

-- The runs in progress, for `pgllm status`: unfinished ones, and finished ones (within a week) whose jobs still wait
-- or run, each with its progress and spend.
CREATE FUNCTION llm.run_status()
RETURNS TABLE (id bigint, task text, kind text, selection text, rows bigint, enqueued bigint, skipped bigint,
               pending bigint, running bigint, succeeded bigint, failed bigint, spent numeric, max_cost numeric,
               created_at timestamptz, finished_at timestamptz)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT r.id, r.task, r.kind, r.selection, r.rows, r.enqueued, r.skipped,
           p.pending, p.running, p.succeeded, p.failed, p.spent, r.max_cost, r.created_at, r.finished_at
      FROM llm.run AS r
     CROSS JOIN LATERAL llm.run_progress(r.id) AS p
     WHERE (r.finished_at IS NULL OR r.finished_at > now() - interval '7 days')
       AND (r.finished_at IS NULL OR p.pending + p.running > 0)
     ORDER BY r.id;
$fn$;

-- Step 1's llm.backfill, enqueuing at priority 1 under a run of kind 'backfill' (made when the backfill starts or
-- starts over; finished with its last batch). Rows, order, cursor and options as in step 1.
CREATE OR REPLACE FUNCTION llm.backfill(p_task text, p_only_empty boolean DEFAULT true, p_batch integer DEFAULT 1000, p_restart boolean DEFAULT false)
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
        INSERT INTO llm.run (task, kind, selection) VALUES (p_task, 'backfill', CASE WHEN p_only_empty THEN 'empty' ELSE 'all' END)
        RETURNING id INTO v_run;
        UPDATE llm.backfill AS b SET run_id = v_run WHERE b.task = p_task;
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
             SELECT $1, b.row_key, $2, 1, $5
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
     USING p_task, v_task.max_attempts, v_state.last_key, p_batch, v_run;

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

REVOKE ALL ON llm.run, llm.run_row FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.run_order(jsonb), llm.run_select(text, text, bigint, numeric),
                       llm.run_start(text, text, bigint, numeric, numeric), llm.run_enqueue(bigint, integer),
                       llm.run_progress(bigint), llm.run_job_cost(bigint, text), llm.run_finish(bigint, text),
                       llm.run_status()
   FROM PUBLIC;
-- Read like llm.job (pgllm status as the worker's role); runs are started by the owner (they read user tables).
GRANT SELECT ON llm.run TO pgllm_worker;
REVOKE ALL ON FUNCTION llm.claim(text, integer, double precision, text[], text[], integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION llm.claim(text, integer, double precision, text[], text[], integer) TO pgllm_worker;
GRANT EXECUTE ON FUNCTION llm.run_progress(bigint), llm.run_status() TO pgllm_worker;
