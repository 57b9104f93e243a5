-- PgLlm queue, step 2: what every task did alike moves here, so that a table's generated script holds
-- only what is its own (its enqueue trigger, the read of its inputs and the typed UPDATE of its targets).
--   * A task's answers are written back by one generated function (:write_back, registered as
--     complete_function) that takes a batch; its one-by-one :complete and set-based :complete_batch
--     go, and with them llm.task.complete_batch_function. The generated function settles the jobs with
--     llm.settle_answers and leaves the jobs it did not write to llm.settle_unwritten.
--   * A settled job whose answer came for inputs the row no longer has enqueues nothing when a newer job
--     of the row and task already has the row's current inputs (pending, running, or succeeded with
--     them): one change, one model call.
--   * The registry row and the removal of tasks no longer declared are core functions.
--   * llm.claim_with_inputs goes: the worker claims with llm.claim and reads inputs itself; nothing
--     else called it.

DROP FUNCTION llm.claim_with_inputs(text, integer, double precision, text[], text[]);

-- The per-task write-back functions of step 1's shape. The tables' scripts, applied after this step in
-- the same run, create their :write_back functions and register them.
DO $drop_old_write_backs$
DECLARE
    v_task record;
BEGIN
    FOR v_task IN SELECT t.complete_function, t.complete_batch_function FROM llm.task AS t LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s', v_task.complete_function::oid::regprocedure);
        IF v_task.complete_batch_function IS NOT NULL THEN
            EXECUTE format('DROP FUNCTION IF EXISTS %s', v_task.complete_batch_function::oid::regprocedure);
        END IF;
    END LOOP;
END
$drop_old_write_backs$;
ALTER TABLE llm.task DROP COLUMN complete_batch_function;
COMMENT ON COLUMN llm.task.complete_function IS
    'The task''s :write_back function: (job ids, attempts, inputs hashes, results, input tokens, output tokens) arrays in, each job''s new state out.';

-- The first statement of a task's write-back: settles as succeeded each job of the batch that is still
-- this attempt's and this task's, and returns its position in the batch (n) and its row key. The jobs
-- are found by key and checked once locked (a concurrent change is waited for and the conditions checked
-- again on the newer version). The state is never null, so IS NOT DISTINCT FROM is = here, but no index
-- answers it: with = the planner may walk the whole index of running jobs instead of the primary key.
-- The UPDATE is the jobs' only lock; a job whose row is then not written is settled again by
-- llm.settle_unwritten in the same call.
CREATE FUNCTION llm.settle_answers(p_task text, p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[],
                                   p_input_tokens integer[], p_output_tokens integer[])
RETURNS TABLE (n integer, row_key jsonb)
LANGUAGE plpgsql
-- The planner's estimate of the rows it returns, as for an unnest of the batch's arrays: with the
-- default (1000) the write-back's UPDATE of your table walked its whole primary key in a merge join
-- instead of looking up each row (measured: 18 of 21 ms for 64 jobs of a 20,000-row table).
ROWS 10
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    RETURN QUERY
    UPDATE llm.job AS j
       SET state = 'succeeded', finished_at = now(), locked_by = NULL, lease_until = NULL,
           inputs_hash = b.inputs_hash, input_tokens = b.input_tokens, output_tokens = b.output_tokens
      FROM unnest(p_job_ids, p_attempts, p_inputs_hashes, p_input_tokens, p_output_tokens)
           WITH ORDINALITY AS b(id, attempt, inputs_hash, input_tokens, output_tokens, n)
     WHERE j.id = b.id AND j.task = p_task
       AND j.state IS NOT DISTINCT FROM 'running' AND j.attempt = b.attempt
 RETURNING b.n::integer, j.row_key;
END
$fn$;

-- A job whose answer came for inputs its row no longer has: superseded. The row's current inputs
-- (p_current_hash) need a job of their own, unless one has them already: another job of the row
-- pending or running (it answers the newer values, or comes here in turn if it read older ones), or a
-- newer job that succeeded with them. The other job is locked, so that one being claimed right now is
-- waited for and seen as running, not missed as no longer pending (found through the pending and
-- running indexes, checked again once locked). The newer succeeded job is looked for among the jobs
-- created after this one (the primary key from p_job_id on).
CREATE FUNCTION llm.supersede(p_job_id bigint, p_current_hash text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $fn$
DECLARE
    v_job llm.job;
BEGIN
    UPDATE llm.job AS j
       SET state = 'superseded', finished_at = now(), locked_by = NULL, lease_until = NULL,
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

-- The last statement of a task's write-back: each job's state, in the order given. A job not settled by
-- llm.settle_answers is 'lost' (another attempt or worker has it). A job settled whose row was not
-- written (rare: its inputs changed, its row is gone, or another job of the batch had its row) goes back
-- to running and through the task's write-back again on its own, in the order given, as one by one. A
-- job alone that was not written is settled from its row's current inputs, read now through the task's
-- inputs function (not as the write-back's statement saw them): none (the row is gone, or an input the
-- prompt needs is null) -> skipped; otherwise superseded (llm.supersede).
CREATE FUNCTION llm.settle_unwritten(p_task text, p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[], p_results jsonb[],
                                     p_input_tokens integer[], p_output_tokens integer[], p_settled integer[], p_written integer[])
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_states text[];
    v_unwritten integer[];
    v_task llm.task;
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
        UPDATE llm.job AS j SET state = 'running', finished_at = NULL
         WHERE j.id = ANY (ARRAY(SELECT p_job_ids[u] FROM unnest(v_unwritten) AS u));
        FOREACH n IN ARRAY v_unwritten LOOP
            EXECUTE format('SELECT (%s(ARRAY[$1], ARRAY[$2], ARRAY[$3], ARRAY[$4], ARRAY[$5], ARRAY[$6]))[1]', v_task.complete_function)
               INTO v_state
              USING p_job_ids[n], p_attempts[n], p_inputs_hashes[n], p_results[n], p_input_tokens[n], p_output_tokens[n];
            v_states[n] := v_state;
        END LOOP;
        RETURN v_states;
    END IF;
    EXECUTE format('SELECT i.inputs_hash FROM %s($1) AS i', v_task.inputs_function) INTO v_hash USING p_job_ids;
    IF v_hash IS NULL THEN
        UPDATE llm.job AS j
           SET state = 'skipped',
               last_error = 'the row was deleted (or an input the prompt needs became null) while the model was answering'
         WHERE j.id = p_job_ids[1];
        RETURN ARRAY['skipped'];
    END IF;
    RETURN ARRAY[llm.supersede(p_job_ids[1], v_hash)];
END
$fn$;

-- Writes back a batch of answers of any tasks in one round trip and one commit (the worker's path for a
-- batch of several tasks, or one its task's :write_back refused as a whole). Each task's jobs go through
-- its :write_back function in one subtransaction; should that fail (one answer that does not fit its
-- column, a lock not granted in time), each job goes through it alone in its own subtransaction, so one
-- job's error never undoes another's written result; the error comes back in its row (error,
-- error_code) and the worker handles that job alone. Only functions registered in llm.task are called.
-- The batch waits at most 20 ms for any lock (error_code 55P03), so it never sits in a lock cycle with a
-- user's transaction. Rows come back in the order given. The worker keeps batches at 64 jobs or fewer
-- (the subtransaction cache).
CREATE OR REPLACE FUNCTION llm.complete_batch(p_tasks text[], p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[],
                                              p_results jsonb[], p_input_tokens integer[], p_output_tokens integer[])
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
        v_call := format('SELECT %s($1, $2, $3, $4, $5, $6)', v_function);
        BEGIN
            EXECUTE v_call INTO v_task_states
              USING ARRAY(SELECT p_job_ids[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_attempts[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_inputs_hashes[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_results[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_input_tokens[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n),
                    ARRAY(SELECT p_output_tokens[a.i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY a.n);
            FOR n IN 1 .. cardinality(v_at) LOOP
                v_states[v_at[n]] := v_task_states[n];
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            -- Undone as a whole: each job of the task on its own.
            FOREACH k IN ARRAY v_at LOOP
                BEGIN
                    EXECUTE v_call INTO v_task_states
                      USING ARRAY[p_job_ids[k]], ARRAY[p_attempts[k]], ARRAY[p_inputs_hashes[k]], ARRAY[p_results[k]],
                            ARRAY[p_input_tokens[k]], ARRAY[p_output_tokens[k]];
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

-- A task's registry row, as its table's script declares it (inserted, or updated in place).
CREATE FUNCTION llm.register_task(name text, table_schema text, table_name text, key_columns text[], read_columns text[],
                                  target_columns text[], image_columns text[], prompt text, system_prompt text, json_schema json,
                                  model text, max_attempts integer, temperature double precision, max_output_tokens integer,
                                  enqueue_function regproc, inputs_function regproc, complete_function regproc, definition_hash text)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO llm.task AS t (name, table_schema, table_name, key_columns, read_columns, target_columns, image_columns, prompt,
                               system_prompt, json_schema, model, max_attempts, temperature, max_output_tokens,
                               enqueue_function, inputs_function, complete_function, definition_hash)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    ON CONFLICT ON CONSTRAINT task_pkey DO UPDATE
       SET (table_schema, table_name, key_columns, read_columns, target_columns, image_columns, prompt, system_prompt,
            json_schema, model, max_attempts, temperature, max_output_tokens, enqueue_function, inputs_function,
            complete_function, definition_hash, updated_at)
         = ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, now());
$fn$;

-- The end of a table's script: the table's tasks no longer declared lose their triggers and functions,
-- and their pending jobs are skipped; then running workers reload the registry.
CREATE FUNCTION llm.forget_undeclared_tasks(p_table_schema text, p_table_name text, p_declared text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_task record;
    v_trigger record;
BEGIN
    FOR v_task IN
        SELECT t.name, t.enqueue_function, t.inputs_function, t.complete_function
          FROM llm.task AS t
         WHERE t.table_schema = p_table_schema AND t.table_name = p_table_name AND t.name <> ALL (p_declared)
    LOOP
        FOR v_trigger IN SELECT g.tgname FROM pg_catalog.pg_trigger AS g WHERE g.tgfoid = v_task.enqueue_function AND NOT g.tgisinternal LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I.%I', v_trigger.tgname, p_table_schema, p_table_name);
        END LOOP;
        EXECUTE format('DROP FUNCTION IF EXISTS %s', v_task.enqueue_function::oid::regprocedure);
        EXECUTE format('DROP FUNCTION IF EXISTS %s', v_task.inputs_function::oid::regprocedure);
        EXECUTE format('DROP FUNCTION IF EXISTS %s', v_task.complete_function::oid::regprocedure);
        UPDATE llm.job AS j SET state = 'skipped', finished_at = now(), last_error = 'the task was removed from the declaration'
         WHERE j.task = v_task.name AND j.state = 'pending';
        DELETE FROM llm.task AS t WHERE t.name = v_task.name;
    END LOOP;
    PERFORM pg_notify('pgllm_tasks', '');
END
$fn$;

-- Called by the tasks' generated functions (which run with the owner's rights) and by migrations only.
REVOKE ALL ON FUNCTION llm.settle_answers(text, bigint[], integer[], text[], integer[], integer[]),
                       llm.supersede(bigint, text),
                       llm.settle_unwritten(text, bigint[], integer[], text[], jsonb[], integer[], integer[], integer[], integer[]),
                       llm.register_task(text, text, text, text[], text[], text[], text[], text, text, json, text, integer,
                                         double precision, integer, regproc, regproc, regproc, text),
                       llm.forget_undeclared_tasks(text, text, text[])
  FROM PUBLIC;
