-- PgLlm queue, step 4: an answer record per job, and the tokens of every attempt.
--   * llm.job keeps the answer that was written to the row (answer), the model that gave it (the name the
--     endpoint reported, else the one asked), the task's definition hash (task_hash, llm.task.definition_hash
--     when the answer was settled), whether the answer cache answered (cache_hit) and the estimated cost of
--     its tokens (estimated_cost, from llm.model_price when the attempt was settled).
--   * input_tokens and output_tokens count every attempt of the job, failed ones too (an invalid answer, a
--     write-back that failed, a stale write): each attempt's tokens are added, and a failed attempt's entry
--     in errors carries its own. A transport error has no usage; nothing is added for it.
--   * llm.row_history(table, key): every job of one row, in order, with its record. llm.job_status shows
--     the record's columns too.
-- Jobs migrated from earlier steps keep what they had: tokens of their successful attempt, and NULL in
-- the new columns (nothing was recorded then).

ALTER TABLE llm.job
    ADD COLUMN IF NOT EXISTS answer jsonb,
    ADD COLUMN IF NOT EXISTS model text,
    ADD COLUMN IF NOT EXISTS task_hash text,
    ADD COLUMN IF NOT EXISTS cache_hit boolean,
    ADD COLUMN IF NOT EXISTS estimated_cost numeric;

COMMENT ON COLUMN llm.job.answer IS 'The validated answer written to the row (the task''s target columns as a JSON object); NULL when nothing was written.';
COMMENT ON COLUMN llm.job.model IS 'The model that answered the latest attempt that got an answer: the name the endpoint reported, else the one asked.';
COMMENT ON COLUMN llm.job.task_hash IS 'llm.task.definition_hash of the task when the job''s latest answer was settled.';
COMMENT ON COLUMN llm.job.cache_hit IS 'Whether the answer cache (llm.answer_cache) gave the latest answer instead of the model.';
COMMENT ON COLUMN llm.job.input_tokens IS 'Input tokens of every attempt of the job that the provider reported usage for, failed ones included.';
COMMENT ON COLUMN llm.job.output_tokens IS 'Output tokens of every attempt of the job that the provider reported usage for, failed ones included.';
COMMENT ON COLUMN llm.job.estimated_cost IS 'The cost of the job''s tokens, each attempt priced by llm.model_price (the task''s model, else ''*'') when it was settled, to 10 decimals; NULL when no price was known.';
COMMENT ON COLUMN llm.task.complete_function IS
    'The task''s :write_back function: (job ids, attempts, inputs hashes, results, input tokens, output tokens, models, cache hits) arrays in, each job''s new state out; one generated before step 4 takes the first six.';

-- The price of a task's tokens, per million: its model's row of llm.model_price, else the row '*' (as
-- llm.usage_daily prices them). No row: NULLs.
CREATE FUNCTION llm.task_price(p_task text, OUT definition_hash text, OUT input_per_million numeric, OUT output_per_million numeric)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- PL/pgSQL so that its plan is cached: it runs in every write-back (an SQL function is planned at every call).
    SELECT t.definition_hash INTO definition_hash FROM llm.task AS t WHERE t.name = p_task;
    SELECT mp.input_per_million, mp.output_per_million INTO input_per_million, output_per_million
      FROM llm.model_price AS mp
     WHERE mp.model = coalesce((SELECT t.model FROM llm.task AS t WHERE t.name = p_task), '*') OR mp.model = '*'
     ORDER BY mp.model = '*'
     LIMIT 1;
END
$fn$;

-- Step 2's llm.settle_answers, with each answer's record: the answer written (p_results), the model that
-- gave it and whether the answer cache did, passed by the task's write-back (which takes them from its
-- caller), written by the same UPDATE that settles the jobs, with the attempt's tokens and their cost added
-- to the job's. The task's hash and price are read once per call.
CREATE FUNCTION llm.settle_answers(p_task text, p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[],
                                   p_input_tokens integer[], p_output_tokens integer[],
                                   p_results jsonb[], p_models text[], p_cache_hits boolean[])
RETURNS TABLE (n integer, row_key jsonb)
LANGUAGE plpgsql
ROWS 10
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_price record;
BEGIN
    -- PL/pgSQL so that its plans are cached (an SQL function is planned at every call).
    SELECT * INTO v_price FROM llm.task_price(p_task);
    RETURN QUERY
    UPDATE llm.job AS j
       SET state = 'succeeded', finished_at = now(), locked_by = NULL, lease_until = NULL,
           inputs_hash = b.inputs_hash,
           input_tokens = CASE WHEN b.input_tokens IS NULL THEN j.input_tokens ELSE coalesce(j.input_tokens, 0) + b.input_tokens END,
           output_tokens = CASE WHEN b.output_tokens IS NULL THEN j.output_tokens ELSE coalesce(j.output_tokens, 0) + b.output_tokens END,
           estimated_cost = CASE WHEN v_price.input_per_million IS NULL OR (b.input_tokens IS NULL AND b.output_tokens IS NULL) THEN j.estimated_cost
                                 ELSE coalesce(j.estimated_cost, 0)
                                    + round((coalesce(b.input_tokens, 0) * v_price.input_per_million
                                           + coalesce(b.output_tokens, 0) * v_price.output_per_million) / 1000000, 10) END,
           answer = b.answer,
           model = coalesce(b.model, j.model),
           cache_hit = coalesce(b.cache_hit, j.cache_hit),
           task_hash = v_price.definition_hash
      -- A NULL array of the record (a caller without it) unnests as NULLs.
      FROM unnest(p_job_ids, p_attempts, p_inputs_hashes, p_input_tokens, p_output_tokens, p_results, p_models, p_cache_hits)
           WITH ORDINALITY AS b(id, attempt, inputs_hash, input_tokens, output_tokens, answer, model, cache_hit, n)
     WHERE j.id = b.id AND j.task = p_task
       AND j.state IS NOT DISTINCT FROM 'running' AND j.attempt = b.attempt
 RETURNING b.n::integer, j.row_key;
END
$fn$;

-- The former signature, called by the write-back functions of steps 2 and 3 until the tables' scripts are
-- applied again: the tokens and their cost are added, no answer, model or cache hit is recorded.
CREATE OR REPLACE FUNCTION llm.settle_answers(p_task text, p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[],
                                              p_input_tokens integer[], p_output_tokens integer[])
RETURNS TABLE (n integer, row_key jsonb)
LANGUAGE sql
ROWS 10
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT * FROM llm.settle_answers(p_task, p_job_ids, p_attempts, p_inputs_hashes, p_input_tokens, p_output_tokens,
                                     NULL::jsonb[], NULL::text[], NULL::boolean[]);
$fn$;

-- Step 2's llm.supersede: the answer was not written, so the job records none (its tokens stay counted).
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
    INSERT INTO llm.job (task, row_key, max_attempts)
    VALUES (v_job.task, v_job.row_key, v_job.max_attempts)
    ON CONFLICT (task, row_key) WHERE state = 'pending' DO NOTHING;
    IF FOUND THEN
        PERFORM llm.wake_workers();
    END IF;
    RETURN 'superseded';
END
$fn$;

-- The statement calling a task's write-back, with $1 to $8 bound to (job ids, attempts, inputs hashes,
-- results, input tokens, output tokens, models, cache hits) and, when p_first, only the first job's state
-- returned. A write-back generated before step 4 (six arguments, until its table's script is applied
-- again) is called without the models and cache hits.
CREATE FUNCTION llm.write_back_call(p_function regproc, p_first boolean)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT format(CASE WHEN p_first THEN 'SELECT (%s(%s))[1]' ELSE 'SELECT %s(%s)' END, p_function,
                  CASE WHEN p.pronargs >= 8 THEN '$1, $2, $3, $4, $5, $6, $7, $8' ELSE '$1, $2, $3, $4, $5, $6' END)
      FROM pg_catalog.pg_proc AS p
     WHERE p.oid = p_function;
$fn$;

-- Step 2's llm.settle_unwritten, with the answers' models and cache hits (p_models, p_cache_hits, passed on
-- to the write-back). A job of a batch that goes through the write-back again on its own gives back the
-- tokens and cost llm.settle_answers added for it (they are added again, once); a skipped job records no
-- answer.
CREATE FUNCTION llm.settle_unwritten(p_task text, p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[], p_results jsonb[],
                                     p_input_tokens integer[], p_output_tokens integer[], p_settled integer[], p_written integer[],
                                     p_models text[], p_cache_hits boolean[])
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_states text[];
    v_unwritten integer[];
    v_task llm.task;
    v_call text;
    v_price record;
    v_state text;
    v_hash text;
    n integer;
BEGIN
    v_states := ARRAY(SELECT CASE WHEN i = ANY (p_settled) THEN 'succeeded' ELSE 'lost' END
                        FROM generate_subscripts(p_job_ids, 1) AS i ORDER BY i);
    IF coalesce(cardinality(p_settled), 0) = coalesce(cardinality(p_written), 0) THEN
        RETURN v_states;
    END IF;
    v_unwritten := ARRAY(SELECT s.n FROM unnest(p_settled) AS s(n) WHERE s.n <> ALL (coalesce(p_written, '{}')) ORDER BY s.n);
    SELECT * INTO STRICT v_task FROM llm.task AS t WHERE t.name = p_task;
    IF cardinality(p_job_ids) > 1 THEN
        SELECT * INTO v_price FROM llm.task_price(p_task);
        UPDATE llm.job AS j
           SET state = 'running', finished_at = NULL,
               input_tokens = j.input_tokens - coalesce(u.input_tokens, 0),
               output_tokens = j.output_tokens - coalesce(u.output_tokens, 0),
               estimated_cost = CASE WHEN v_price.input_per_million IS NULL OR (u.input_tokens IS NULL AND u.output_tokens IS NULL) THEN j.estimated_cost
                                     ELSE j.estimated_cost - round((coalesce(u.input_tokens, 0) * v_price.input_per_million
                                                                  + coalesce(u.output_tokens, 0) * v_price.output_per_million) / 1000000, 10) END
          FROM (SELECT p_job_ids[w] AS id, p_input_tokens[w] AS input_tokens, p_output_tokens[w] AS output_tokens
                  FROM unnest(v_unwritten) AS w) AS u
         WHERE j.id = u.id;
        v_call := llm.write_back_call(v_task.complete_function, true);
        FOREACH n IN ARRAY v_unwritten LOOP
            EXECUTE v_call INTO v_state
              USING ARRAY[p_job_ids[n]], ARRAY[p_attempts[n]], ARRAY[p_inputs_hashes[n]], ARRAY[p_results[n]],
                    ARRAY[p_input_tokens[n]], ARRAY[p_output_tokens[n]], ARRAY[p_models[n]], ARRAY[p_cache_hits[n]];
            v_states[n] := v_state;
        END LOOP;
        RETURN v_states;
    END IF;
    EXECUTE format('SELECT i.inputs_hash FROM %s($1) AS i', v_task.inputs_function) INTO v_hash USING p_job_ids;
    IF v_hash IS NULL THEN
        UPDATE llm.job AS j
           SET state = 'skipped', answer = NULL,
               last_error = 'the row was deleted (or an input the prompt needs became null) while the model was answering'
         WHERE j.id = p_job_ids[1];
        RETURN ARRAY['skipped'];
    END IF;
    RETURN ARRAY[llm.supersede(p_job_ids[1], v_hash)];
END
$fn$;

-- The former signature, called by the write-back functions generated before step 4: no model or cache hit.
CREATE OR REPLACE FUNCTION llm.settle_unwritten(p_task text, p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[], p_results jsonb[],
                                                p_input_tokens integer[], p_output_tokens integer[], p_settled integer[], p_written integer[])
RETURNS text[]
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT llm.settle_unwritten(p_task, p_job_ids, p_attempts, p_inputs_hashes, p_results, p_input_tokens, p_output_tokens,
                                p_settled, p_written, NULL::text[], NULL::boolean[]);
$fn$;

-- Step 2's llm.complete_batch, with each answer's model and cache hit, passed to the task's write-back with
-- its answer (the write-back's own UPDATE of the jobs records them).
CREATE FUNCTION llm.complete_batch(p_tasks text[], p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[],
                                   p_results jsonb[], p_input_tokens integer[], p_output_tokens integer[],
                                   p_models text[], p_cache_hits boolean[])
RETURNS TABLE (job_id bigint, state text, error text, error_code text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_count integer := coalesce(array_length(p_job_ids, 1), 0);
    v_states text[] := array_fill(NULL::text, ARRAY[v_count]);
    v_errors text[] := array_fill(NULL::text, ARRAY[v_count]);
    v_codes text[] := array_fill(NULL::text, ARRAY[v_count]);
    v_task text;
    v_function regproc;
    v_call text;
    v_at integer[];
    v_task_states text[];
    k integer;
BEGIN
    PERFORM set_config('lock_timeout', '20ms', true);
    -- The worker's own commits do not wait for their WAL flush (see docs/queue.md).
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR v_task IN SELECT DISTINCT t FROM unnest(p_tasks) AS t LOOP
        v_at := ARRAY(SELECT i FROM generate_subscripts(p_job_ids, 1) AS i WHERE p_tasks[i] IS NOT DISTINCT FROM v_task ORDER BY i);
        v_task_states := NULL;
        SELECT t.complete_function INTO v_function FROM llm.task AS t WHERE t.name = v_task;
        IF NOT FOUND THEN
            FOREACH k IN ARRAY v_at LOOP
                v_errors[k] := format('task %L is not in llm.task', v_task);
                v_codes[k] := 'P0002';
            END LOOP;
            CONTINUE;
        END IF;
        v_call := llm.write_back_call(v_function, false);
        BEGIN
            EXECUTE v_call INTO v_task_states
              USING ARRAY(SELECT p_job_ids[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_attempts[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_inputs_hashes[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_results[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_input_tokens[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_output_tokens[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_models[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_cache_hits[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n);
            FOR n IN 1 .. cardinality(v_at) LOOP
                v_states[v_at[n]] := v_task_states[n];
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            -- Undone as a whole: each job of the task on its own.
            FOREACH k IN ARRAY v_at LOOP
                BEGIN
                    EXECUTE v_call INTO v_task_states
                      USING ARRAY[p_job_ids[k]], ARRAY[p_attempts[k]], ARRAY[p_inputs_hashes[k]], ARRAY[p_results[k]],
                            ARRAY[p_input_tokens[k]], ARRAY[p_output_tokens[k]], ARRAY[p_models[k]], ARRAY[p_cache_hits[k]];
                    v_states[k] := v_task_states[1];
                EXCEPTION WHEN OTHERS THEN
                    v_errors[k] := SQLERRM;
                    v_codes[k] := SQLSTATE;
                END;
            END LOOP;
        END;
    END LOOP;
    RETURN QUERY
        SELECT p_job_ids[i], v_states[i], v_errors[i], v_codes[i]
          FROM generate_subscripts(p_job_ids, 1) AS i
         ORDER BY i;
END
$fn$;

-- The former signature: the answers are recorded, without their model or cache hit.
CREATE OR REPLACE FUNCTION llm.complete_batch(p_tasks text[], p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[],
                                              p_results jsonb[], p_input_tokens integer[], p_output_tokens integer[])
RETURNS TABLE (job_id bigint, state text, error text, error_code text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT * FROM llm.complete_batch(p_tasks, p_job_ids, p_attempts, p_inputs_hashes, p_results, p_input_tokens, p_output_tokens,
                                     NULL::text[], NULL::boolean[]);
$fn$;

-- Step 1's llm.settle, with what the attempt's answer cost when there was one (p_usage: input_tokens,
-- output_tokens, model, cache_hit; NULL when the attempt got no answer). The tokens are added to the
-- job's, with their cost; the error's entry in the history carries them too.
CREATE FUNCTION llm.settle(p_job_id bigint, p_attempt integer, p_state text, p_error text, p_retry_in_seconds double precision,
                           p_kind text, p_usage jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_entry jsonb;
    v_job llm.job;
    v_input integer := (p_usage ->> 'input_tokens')::integer;
    v_output integer := (p_usage ->> 'output_tokens')::integer;
    v_price record;
    v_cost numeric;
BEGIN
    -- Found by its key alone and checked once locked (see step 1).
    SELECT * INTO v_job FROM llm.job AS j WHERE j.id = p_job_id FOR UPDATE;
    IF NOT FOUND OR v_job.state <> 'running' OR v_job.attempt <> p_attempt THEN
        RETURN 'lost';
    END IF;
    IF v_input IS NOT NULL OR v_output IS NOT NULL THEN
        SELECT * INTO v_price FROM llm.task_price(v_job.task);
        v_cost := round((coalesce(v_input, 0) * v_price.input_per_million + coalesce(v_output, 0) * v_price.output_per_million) / 1000000, 10);
    END IF;
    v_entry := CASE WHEN p_error IS NULL THEN NULL
                    ELSE jsonb_strip_nulls(jsonb_build_object('attempt', p_attempt, 'at', now(), 'kind', p_kind, 'error', p_error)
                                           || coalesce(p_usage, '{}'::jsonb)) END;
    BEGIN
        UPDATE llm.job AS j
           SET state = p_state,
               last_error = coalesce(p_error, j.last_error),
               errors = CASE WHEN v_entry IS NULL THEN j.errors ELSE j.errors || v_entry END,
               scheduled_at = CASE WHEN p_state = 'pending'
                                   THEN now() + make_interval(secs => greatest(p_retry_in_seconds, 0))
                                   ELSE j.scheduled_at END,
               finished_at = CASE WHEN p_state = 'pending' THEN NULL ELSE now() END,
               locked_by = NULL,
               lease_until = NULL,
               input_tokens = CASE WHEN v_input IS NULL THEN j.input_tokens ELSE coalesce(j.input_tokens, 0) + v_input END,
               output_tokens = CASE WHEN v_output IS NULL THEN j.output_tokens ELSE coalesce(j.output_tokens, 0) + v_output END,
               estimated_cost = CASE WHEN v_cost IS NULL THEN j.estimated_cost ELSE coalesce(j.estimated_cost, 0) + v_cost END,
               model = coalesce(p_usage ->> 'model', j.model),
               cache_hit = coalesce((p_usage ->> 'cache_hit')::boolean, j.cache_hit)
         WHERE j.id = p_job_id;
    EXCEPTION WHEN unique_violation THEN
        UPDATE llm.job AS j
           SET state = 'superseded',
               last_error = coalesce(p_error, j.last_error),
               errors = CASE WHEN v_entry IS NULL THEN j.errors ELSE j.errors || v_entry END,
               finished_at = now(),
               locked_by = NULL,
               lease_until = NULL,
               input_tokens = CASE WHEN v_input IS NULL THEN j.input_tokens ELSE coalesce(j.input_tokens, 0) + v_input END,
               output_tokens = CASE WHEN v_output IS NULL THEN j.output_tokens ELSE coalesce(j.output_tokens, 0) + v_output END,
               estimated_cost = CASE WHEN v_cost IS NULL THEN j.estimated_cost ELSE coalesce(j.estimated_cost, 0) + v_cost END,
               model = coalesce(p_usage ->> 'model', j.model),
               cache_hit = coalesce((p_usage ->> 'cache_hit')::boolean, j.cache_hit)
         WHERE j.id = p_job_id;
        RETURN 'superseded';
    END;
    RETURN p_state;
END
$fn$;

-- The former signature: an attempt that got no answer.
CREATE OR REPLACE FUNCTION llm.settle(p_job_id bigint, p_attempt integer, p_state text, p_error text, p_retry_in_seconds double precision, p_kind text DEFAULT NULL)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT llm.settle(p_job_id, p_attempt, p_state, p_error, p_retry_in_seconds, p_kind, NULL::jsonb);
$fn$;

-- Step 3's llm.fail, with the failed attempt's usage when the model answered (an invalid answer, a write-back
-- that failed): its tokens count in the job's, in llm.usage_daily and in pgllm status.
CREATE FUNCTION llm.fail(p_job_id bigint, p_attempt integer, p_error text, p_retry_in_seconds double precision, p_kind text,
                         p_input_tokens integer, p_output_tokens integer, p_model text, p_cache_hit boolean)
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
                      p_error, p_retry_in_seconds, p_kind,
                      nullif(jsonb_strip_nulls(jsonb_build_object('input_tokens', p_input_tokens, 'output_tokens', p_output_tokens,
                                                                  'model', p_model, 'cache_hit', CASE WHEN p_cache_hit THEN true END)),
                             '{}'::jsonb));
END
$fn$;

-- The former signature: an attempt that got no answer (a transport error, a timeout, a row that could not be read).
CREATE OR REPLACE FUNCTION llm.fail(p_job_id bigint, p_attempt integer, p_error text, p_retry_in_seconds double precision, p_kind text DEFAULT 'transient')
RETURNS text
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT llm.fail(p_job_id, p_attempt, p_error, p_retry_in_seconds, p_kind, NULL::integer, NULL::integer, NULL::text, NULL::boolean);
$fn$;

-- Usage per task and UTC day, as in step 1, now with the tokens of failed attempts: a job counts on the day
-- it finished, and a job still waiting for its next attempt on the day of its latest attempt (so tokens
-- spent by attempts that failed show at once, not only once the job ends).
CREATE OR REPLACE VIEW llm.usage_daily AS
SELECT j.task,
       (coalesce(j.finished_at, j.attempted_at) AT TIME ZONE 'UTC')::date AS day,
       t.model,
       count(*) AS jobs,
       coalesce(sum(j.input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(j.output_tokens), 0)::bigint AS output_tokens,
       round((coalesce(sum(j.input_tokens), 0) * max(p.input_per_million)
            + coalesce(sum(j.output_tokens), 0) * max(p.output_per_million)) / 1000000, 6) AS estimated_cost
  FROM llm.job AS j
  LEFT JOIN llm.task AS t ON t.name = j.task
  LEFT JOIN LATERAL (SELECT mp.input_per_million, mp.output_per_million
                       FROM llm.model_price AS mp
                      WHERE mp.model = coalesce(t.model, '*') OR mp.model = '*'
                      ORDER BY mp.model = '*'
                      LIMIT 1) AS p ON true
 WHERE coalesce(j.finished_at, j.attempted_at) IS NOT NULL
   AND (j.input_tokens IS NOT NULL OR j.output_tokens IS NOT NULL)
 GROUP BY j.task, (coalesce(j.finished_at, j.attempted_at) AT TIME ZONE 'UTC')::date, t.model;

-- The status view of step 1 with the answer record's columns (added at the end, as a view's columns must be).
CREATE OR REPLACE VIEW llm.job_status WITH (security_barrier = true) AS
SELECT j.id, j.task, t.table_schema, t.table_name, j.row_key, j.state, j.attempt, j.max_attempts,
       j.scheduled_at, j.created_at, j.attempted_at, j.finished_at, j.last_error, j.errors,
       j.answer, j.model, j.task_hash, j.input_tokens, j.output_tokens, j.estimated_cost, j.cache_hit
  FROM llm.job AS j
  JOIN llm.task AS t ON t.name = j.task
  JOIN pg_catalog.pg_namespace AS n ON n.nspname = t.table_schema
  JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = t.table_name
 WHERE pg_catalog.has_schema_privilege(n.oid, 'USAGE')
   AND pg_catalog.has_table_privilege(c.oid, 'SELECT');

-- Every job of one row of p_table (every task of the table), oldest first, with its record: state, answer
-- written, model, tokens, cost, cache hit, errors. p_key is the row's key as the jobs hold it
-- (llm.job.row_key: the key columns by name, e.g. '{"id": 42}'). Runs with the caller's rights through
-- llm.job_status, so a role sees the history of a table it may read, and nothing of one it may not.
-- Reads the jobs still kept (pruned with them, see Worker:Retention).
CREATE FUNCTION llm.row_history(p_table regclass, p_key jsonb)
RETURNS TABLE (job_id bigint, task text, state text, attempts integer, answer jsonb, model text, task_hash text,
               input_tokens integer, output_tokens integer, estimated_cost numeric, cache_hit boolean,
               last_error text, errors jsonb, created_at timestamptz, attempted_at timestamptz, finished_at timestamptz)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT s.id, s.task, s.state::text, s.attempt, s.answer, s.model, s.task_hash,
           s.input_tokens, s.output_tokens, s.estimated_cost, s.cache_hit,
           s.last_error, s.errors, s.created_at, s.attempted_at, s.finished_at
      FROM pg_catalog.pg_class AS c
      JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
      JOIN llm.job_status AS s ON s.table_schema = n.nspname AND s.table_name = c.relname
     WHERE c.oid = p_table AND s.row_key = p_key
     ORDER BY s.id;
$fn$;

-- Privileges: the record is read through llm.job_status and llm.row_history (the caller's rights, filtered
-- to the tables the caller may read), so both are anyone's; the worker calls the batch with the record and
-- llm.fail with an attempt's usage. The settling functions stay the owner's (called by the generated
-- write-back functions, which run with the owner's rights).
REVOKE ALL ON FUNCTION llm.task_price(text),
                       llm.settle(bigint, integer, text, text, double precision, text, jsonb),
                       llm.settle_answers(text, bigint[], integer[], text[], integer[], integer[], jsonb[], text[], boolean[]),
                       llm.settle_unwritten(text, bigint[], integer[], text[], jsonb[], integer[], integer[], integer[], integer[], text[], boolean[])
  FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.write_back_call(regproc, boolean),
                       llm.complete_batch(text[], bigint[], integer[], text[], jsonb[], integer[], integer[], text[], boolean[]),
                       llm.fail(bigint, integer, text, double precision, text, integer, integer, text, boolean)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION llm.write_back_call(regproc, boolean),
                          llm.complete_batch(text[], bigint[], integer[], text[], jsonb[], integer[], integer[], text[], boolean[]),
                          llm.fail(bigint, integer, text, double precision, text, integer, integer, text, boolean)
  TO pgllm_worker;
GRANT SELECT ON llm.job_status TO PUBLIC;
GRANT EXECUTE ON FUNCTION llm.row_history(regclass, jsonb) TO PUBLIC;
