-- PgLlm queue, step 10: chains. A task may read a column another task of its table writes (its upstream);
-- it then runs after that column is written, and again when it changes.
--   * llm.task.after lists a task's upstream tasks, direct and indirect (the generator computes them; a
--     cycle is a build error, PGLLM017). llm.register_task takes them as a last parameter, after, which
--     defaults to none: a table script generated before this step registers its tasks as before.
--   * llm.hold_for_upstreams(task, jobs, attempts): a worker that claimed jobs of a task with upstreams asks
--     it before reading their inputs. A job whose row has an upstream job pending or running goes back to
--     pending without spending its attempt, recording no error, and without a model call: it waits for the
--     upstream to settle (the upstream's write-back wakes it; else it looks again after a wait as long as it
--     has waited, 1 s to 1 minute). Only tasks with upstreams ever call it: the claim, the enqueue trigger,
--     the read of inputs and the write-back of every other task are as before.
--   * llm.wake_after(task, jobs): the write-back of a task that others read (generated so only for such a
--     task) makes their waiting jobs of the rows it settled due now, and wakes a sleeping worker. Were its
--     answer to change the column, the downstream's update trigger finds the waiting job pending and adds
--     none: one downstream call, which reads the newest values.

ALTER TABLE llm.task ADD COLUMN after text[] NOT NULL DEFAULT '{}';

COMMENT ON COLUMN llm.task.after IS
    'The tasks of the same table whose targets this task reads, directly or through other tasks: its jobs wait while one of theirs of the same row is pending or running.';

DROP FUNCTION llm.register_task(text, text, text, text[], text[], text[], text[], text, text, json, text, integer,
                                double precision, integer, regproc, regproc, regproc, text);

-- A task's registry row, as its table's script declares it (inserted, or updated in place), with its upstream tasks.
CREATE FUNCTION llm.register_task(name text, table_schema text, table_name text, key_columns text[], read_columns text[],
                                  target_columns text[], image_columns text[], prompt text, system_prompt text, json_schema json,
                                  model text, max_attempts integer, temperature double precision, max_output_tokens integer,
                                  enqueue_function regproc, inputs_function regproc, complete_function regproc, definition_hash text,
                                  after text[] DEFAULT '{}')
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO llm.task AS t (name, table_schema, table_name, key_columns, read_columns, target_columns, image_columns, prompt,
                               system_prompt, json_schema, model, max_attempts, temperature, max_output_tokens,
                               enqueue_function, inputs_function, complete_function, definition_hash, after)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, coalesce($19, '{}'))
    ON CONFLICT ON CONSTRAINT task_pkey DO UPDATE
       SET (table_schema, table_name, key_columns, read_columns, target_columns, image_columns, prompt, system_prompt,
            json_schema, model, max_attempts, temperature, max_output_tokens, enqueue_function, inputs_function,
            complete_function, definition_hash, after, updated_at)
         = ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, coalesce($19, '{}'), now());
$fn$;

-- Claimed jobs of p_task (at the attempts given) whose row has a job of an upstream task pending or running (or
-- already a newer pending job of p_task, which the upstream's write queued while this one was claimed):
-- each goes back to pending without spending its attempt (as llm.release does; superseded instead, its attempt
-- not spent either, when a newer pending job of the row covers it: the upstream's write queued one meanwhile). It looks again after a wait as long as it has waited so far (at least 1 s,
-- at most a minute; and not before an upstream job backing off is due), so that a long backlog of upstream jobs
-- costs each waiting job a few looks, not one a second: the upstream's write-back makes it due at once
-- (llm.wake_after); the wait matters only when the upstream fails instead. Its budget reservation goes: the
-- attempt is not spent. Returns the jobs held, which the caller must not run (with a job no longer this
-- attempt's: the caller has lost it anyway). Upstream jobs are found by the index of pending jobs (task, row
-- key) and among the running ones (few: the workers' concurrency).
CREATE FUNCTION llm.hold_for_upstreams(p_task text, p_job_ids bigint[], p_attempts integer[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_after text[];
    v_job record;
    v_state text;
    v_held bigint[] := '{}';
BEGIN
    SELECT t.after INTO v_after FROM llm.task AS t WHERE t.name = p_task;
    IF v_after IS NULL OR cardinality(v_after) = 0 THEN
        RETURN v_held;
    END IF;
    FOR v_job IN
        SELECT c.id, c.attempt,
               greatest(now() + least(interval '1 minute', greatest(interval '1 second', now() - j.created_at)),
                        p.due + interval '100 milliseconds') AS due
          FROM unnest(p_job_ids, p_attempts) AS c(id, attempt)
          JOIN llm.job AS j ON j.id = c.id
         CROSS JOIN LATERAL (SELECT min(u.scheduled_at) AS due
                               FROM llm.job AS u
                              WHERE u.task = ANY (v_after) AND u.row_key = j.row_key AND u.state = 'pending') AS p
         WHERE p.due IS NOT NULL
            OR EXISTS (SELECT 1 FROM llm.job AS u
                        WHERE u.state = 'running' AND u.task = ANY (v_after) AND u.row_key = j.row_key)
            -- The upstream settled while this job was being claimed, and its write queued a job of this task and row:
            -- that one runs, with the values this one would read; this one is superseded, unspent.
            OR EXISTS (SELECT 1 FROM llm.job AS o
                        WHERE o.task = p_task AND o.row_key = j.row_key AND o.state = 'pending')
         ORDER BY c.id
    LOOP
        v_state := llm.settle(v_job.id, v_job.attempt, 'pending', NULL, greatest(extract(epoch FROM v_job.due - now())::double precision, 0));
        IF v_state IN ('pending', 'superseded') THEN
            UPDATE llm.job AS j SET attempt = j.attempt - 1 WHERE j.id = v_job.id;
        END IF;
        v_held := v_held || v_job.id;
    END LOOP;
    IF cardinality(v_held) > 0 THEN
        DELETE FROM llm.budget_reservation AS r WHERE r.job_id = ANY (v_held);
    END IF;
    RETURN v_held;
END
$fn$;

-- Called by the write-back of a task that others read (p_task), with the jobs it settled: the waiting jobs of its
-- downstream tasks for those rows are due now (a job scheduled later, held or backing off, is looked at again
-- with the upstream's new value), and a sleeping worker is woken. A job locked right now (being claimed) is left
-- alone rather than waited for, so the write-back never waits on a claim: it looks again after its wait anyway.
CREATE FUNCTION llm.wake_after(p_task text, p_job_ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE llm.job AS d
       SET scheduled_at = now()
     WHERE d.id = ANY (ARRAY(
               SELECT w.id
                 FROM (SELECT DISTINCT j.row_key FROM llm.job AS j WHERE j.id = ANY (p_job_ids)) AS r
                 JOIN llm.task AS t ON p_task = ANY (t.after)
                 JOIN llm.job AS w ON w.task = t.name AND w.row_key = r.row_key AND w.state = 'pending'
                WHERE w.scheduled_at > now()
                  FOR UPDATE OF w SKIP LOCKED))
       AND d.state = 'pending';
    IF FOUND THEN
        PERFORM llm.wake_workers();
    END IF;
END
$fn$;

-- The worker calls the hold; the wake is called by the generated write-back functions (the owner's rights) only,
-- and the registry by migrations.
REVOKE ALL ON FUNCTION llm.register_task(text, text, text, text[], text[], text[], text[], text, text, json, text, integer,
                                         double precision, integer, regproc, regproc, regproc, text, text[]),
                       llm.hold_for_upstreams(text, bigint[], integer[]),
                       llm.wake_after(text, bigint[])
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION llm.hold_for_upstreams(text, bigint[], integer[]) TO pgllm_worker;
