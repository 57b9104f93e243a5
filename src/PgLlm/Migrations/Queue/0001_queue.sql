-- PgLlm queue, step 1: the queue, the task registry and the functions the worker calls.
-- A numbered migration: applied once, journaled, never edited; later steps change what it made.
-- It is the core schema the streamed core script ("0001-pgllm-core") left, written so that it also
-- applies to a database that script migrated (IF NOT EXISTS, CREATE OR REPLACE, checks before a
-- domain or constraint is made): such a database goes on from here like any other.
-- Every function pins search_path and schema-qualifies what it touches. The worker's functions run
-- with the owner's rights (SECURITY DEFINER) so that the worker role needs no write privilege on the
-- queue; see the privileges at the end and docs/security.md.

CREATE SCHEMA IF NOT EXISTS llm;

-- The worker's group role: the login a worker connects as is made a member of it
-- (GRANT pgllm_worker TO my_worker_login). Roles are cluster-wide, so it may already exist.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgllm_worker') THEN
        BEGIN
            CREATE ROLE pgllm_worker NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- created at the same moment by a migration of another database
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'PgLlm needs the role pgllm_worker, and the role running the migrations (%) may not create roles', current_user
                      USING ERRCODE = 'insufficient_privilege',
                            HINT = 'As a role with CREATEROLE run: CREATE ROLE pgllm_worker NOLOGIN; then run the migrations again.';
        END;
    END IF;
END
$roles$;

-- One row per declared task, written only by migrations. The worker reads it to know what to
-- render, which JSON schema to ask for and which generated functions read inputs and write results.
CREATE TABLE IF NOT EXISTS llm.task (
    name              text PRIMARY KEY,
    table_schema      text NOT NULL,
    table_name        text NOT NULL,
    key_columns       text[] NOT NULL,
    read_columns      text[] NOT NULL,
    target_columns    text[] NOT NULL,
    prompt            text NOT NULL,
    system_prompt     text,
    -- json, not jsonb: property order is kept as declared (models answer in schema order).
    json_schema       json NOT NULL,
    model             text,
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    enqueue_function  regproc NOT NULL,
    inputs_function   regproc NOT NULL,
    complete_function regproc NOT NULL,
    definition_hash   text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    temperature       double precision,
    max_output_tokens integer,
    -- Read columns sent to the model as image content parts (a URL, or bytea as a data URL), not as text.
    image_columns     text[] NOT NULL DEFAULT '{}',
    -- The task's set-based write-back of a batch.
    complete_batch_function regproc
);

-- A job's state and its attempt limit are domains rather than CHECK constraints on llm.job: PostgreSQL
-- parses and plans a table's CHECK expressions again each time a statement that writes the table starts,
-- and every enqueue trigger is such a statement (54,000 of the 444,000 CPU instructions of an insert
-- with a task trigger went to the state check alone). A domain's constraints are parsed once per
-- session, and checked only when a statement assigns the column.
DO $domains$
BEGIN
    IF to_regtype('llm.job_state') IS NULL THEN
        CREATE DOMAIN llm.job_state AS text;
    END IF;
    IF to_regtype('llm.job_max_attempts') IS NULL THEN
        CREATE DOMAIN llm.job_max_attempts AS integer;
    END IF;
END
$domains$;

-- The queue. A job names a task and a row key, never the row's values: the worker reads the
-- latest values when it runs the job, so rapid updates collapse into one pending job.
CREATE TABLE IF NOT EXISTS llm.job (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task          text NOT NULL,
    row_key       jsonb NOT NULL,
    state         llm.job_state NOT NULL DEFAULT 'pending',
    attempt       integer NOT NULL DEFAULT 0,
    max_attempts  llm.job_max_attempts NOT NULL,
    scheduled_at  timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    attempted_at  timestamptz,
    finished_at   timestamptz,
    locked_by     text,
    lease_until   timestamptz,
    inputs_hash   text,
    last_error    text,
    errors        jsonb NOT NULL DEFAULT '[]'::jsonb,
    input_tokens  integer,
    output_tokens integer
);

-- The domains' constraints (a database the streamed core script migrated has them already).
DO $domain_checks$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                    WHERE c.contypid = 'llm.job_state'::regtype AND c.conname = 'job_state_check') THEN
        ALTER DOMAIN llm.job_state ADD CONSTRAINT job_state_check
            CHECK (VALUE IN ('pending', 'running', 'succeeded', 'failed', 'superseded', 'skipped'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint AS c
                    WHERE c.contypid = 'llm.job_max_attempts'::regtype AND c.conname = 'job_max_attempts_check') THEN
        ALTER DOMAIN llm.job_max_attempts ADD CONSTRAINT job_max_attempts_check CHECK (VALUE >= 1);
    END IF;
END
$domain_checks$;

-- Dedup: at most one pending job per (task, row). The triggers' INSERT ... ON CONFLICT is
-- answered by this index, so its cost does not grow with the queue.
CREATE UNIQUE INDEX IF NOT EXISTS job_pending_key ON llm.job (task, row_key) WHERE state = 'pending';
-- Claim order: the ready jobs, oldest schedule first. Retried jobs move back by their backoff,
-- so failing jobs never sit ahead of healthy ones.
CREATE INDEX IF NOT EXISTS job_ready ON llm.job (scheduled_at, id) WHERE state = 'pending';
-- Every job out of pending, by state: the running ones (rescue of jobs whose worker died, a write-back's
-- look for a newer job), the finished history (pruning) and the dead letters. One index rather than one
-- per use: each index of llm.job costs every enqueue, whether or not the new job enters it (PostgreSQL
-- opens it and evaluates its predicate at each insert): three partial indexes cost about 13,000 more
-- CPU instructions per enqueue than this one (of about 355,000 for an insert with a task trigger).
CREATE INDEX IF NOT EXISTS job_not_pending ON llm.job (state, finished_at) WHERE state <> 'pending';

-- Claims up to p_limit ready jobs for one worker in one short statement. The attempt is counted
-- here and committed with the claim, so a failure can never roll the count back. p_only / p_except
-- (NULL: no filter) restrict the claim to some tasks: a worker with several model endpoints claims
-- for each endpoint's free slots only the tasks that endpoint serves, so a slow endpoint's jobs
-- never take the slots of another's.
-- PL/pgSQL so that its plans are cached (an SQL function's statements are planned at every call), and
-- generic: PostgreSQL's default would plan again at every call, which cost more than the claim itself.
-- The only good plan walks job_ready in order and stops at p_limit; with the filters (whose
-- selectivity the planner cannot know) it would otherwise sort every ready job first, hence the
-- planner settings.
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
     -- = ANY (ARRAY(...)) rather than a join: a generic plan cannot know p_limit and would otherwise
     -- hash-join against a scan of the whole queue, history included.
     WHERE j.id = ANY (ARRAY(SELECT c.id
                               FROM llm.job AS c
                              WHERE c.state = 'pending' AND c.scheduled_at <= now()
                                AND (p_only IS NULL OR c.task = ANY (p_only))
                                AND (p_except IS NULL OR c.task <> ALL (p_except))
                              ORDER BY c.scheduled_at, c.id
                              LIMIT p_limit
                                FOR UPDATE SKIP LOCKED))
 RETURNING j.id, j.task, j.row_key, j.attempt, j.max_attempts::integer; -- as declared: RETURN QUERY refuses the domain
END
$fn$;

-- The claim of any task (the in-database worker's, and the signature of the first release).
CREATE OR REPLACE FUNCTION llm.claim(p_worker text, p_limit integer, p_lease_seconds double precision)
RETURNS TABLE (id bigint, task text, row_key jsonb, attempt integer, max_attempts integer)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT * FROM llm.claim(p_worker, p_limit, p_lease_seconds, NULL, NULL);
$fn$;

-- Moves a running job out of 'running' into p_state, recording p_error in its history. A job
-- that goes back to 'pending' while a newer pending job exists for the same row is superseded:
-- the newer one carries the latest inputs.
CREATE OR REPLACE FUNCTION llm.settle(p_job_id bigint, p_attempt integer, p_state text, p_error text, p_retry_in_seconds double precision, p_kind text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_entry jsonb;
    v_job_state text;
    v_job_attempt integer;
BEGIN
    -- Found by its key alone and checked once locked: with a condition on the state, the planner may
    -- walk the whole index of running jobs instead of the primary key.
    SELECT j.state, j.attempt INTO v_job_state, v_job_attempt FROM llm.job AS j WHERE j.id = p_job_id FOR UPDATE;
    IF NOT FOUND OR v_job_state <> 'running' OR v_job_attempt <> p_attempt THEN
        RETURN 'lost';
    END IF;
    v_entry := CASE WHEN p_error IS NULL THEN NULL
                    ELSE jsonb_strip_nulls(jsonb_build_object('attempt', p_attempt, 'at', now(), 'kind', p_kind, 'error', p_error)) END;
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
               lease_until = NULL
         WHERE j.id = p_job_id;
    EXCEPTION WHEN unique_violation THEN
        UPDATE llm.job AS j
           SET state = 'superseded',
               last_error = coalesce(p_error, j.last_error),
               errors = CASE WHEN v_entry IS NULL THEN j.errors ELSE j.errors || v_entry END,
               finished_at = now(),
               locked_by = NULL,
               lease_until = NULL
         WHERE j.id = p_job_id;
        RETURN 'superseded';
    END;
    RETURN p_state;
END
$fn$;

-- A failed attempt. p_kind says what failed:
--   transient  timeouts, connection errors, HTTP 408/429/5xx: retried until max_attempts;
--   invalid    the answer did not parse or fit the columns: retried, but failed after 3 such
--              answers (or max_attempts, if lower), since a model that keeps answering badly rarely recovers;
--   permanent  other HTTP 4xx (bad request, auth): failed at once, retrying cannot help.
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
    SELECT count(*) + 1 INTO v_invalid
      FROM jsonb_array_elements(v_job.errors) AS e
     WHERE e->>'kind' = 'invalid';
    v_final := p_kind = 'permanent'
            OR p_attempt >= v_job.max_attempts
            OR (p_kind = 'invalid' AND v_invalid >= least(v_job.max_attempts, 3));
    RETURN llm.settle(p_job_id, p_attempt, CASE WHEN v_final THEN 'failed' ELSE 'pending' END,
                      p_error, p_retry_in_seconds, p_kind);
END
$fn$;

-- The row of a job is gone (deleted before the worker read it): nothing to do.
CREATE OR REPLACE FUNCTION llm.skip(p_job_id bigint, p_attempt integer, p_reason text)
RETURNS text
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT llm.settle(p_job_id, p_attempt, 'skipped', p_reason, 0);
$fn$;

-- A worker gives a job back without using its attempt (shutdown before the model answered).
CREATE OR REPLACE FUNCTION llm.release(p_job_id bigint, p_attempt integer)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_state text;
BEGIN
    v_state := llm.settle(p_job_id, p_attempt, 'pending', NULL, 0);
    IF v_state = 'pending' THEN
        UPDATE llm.job SET attempt = attempt - 1 WHERE id = p_job_id;
    END IF;
    RETURN v_state;
END
$fn$;

-- Jobs whose lease ran out (their worker died or lost the database): retried while attempts
-- remain. The attempt they were on counts.
CREATE OR REPLACE FUNCTION llm.rescue(p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_job record;
    v_count integer := 0;
BEGIN
    FOR v_job IN
        SELECT j.id, j.attempt, j.max_attempts
          FROM llm.job AS j
         WHERE j.state = 'running' AND j.lease_until < now()
         ORDER BY j.lease_until
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM llm.settle(v_job.id, v_job.attempt,
                           CASE WHEN v_job.attempt >= v_job.max_attempts THEN 'failed' ELSE 'pending' END,
                           'lease expired: the worker stopped answering', 0, 'transient');
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$fn$;

-- Dead letters: failed jobs stay in llm.job with their errors until re-driven here (all, one task,
-- or one job). Each (task, row) re-drives its latest failed job, with a fresh set of attempts and its
-- error history kept; rows that already have a pending job are left alone. Returns the number re-driven.
CREATE OR REPLACE FUNCTION llm.retry_failed(p_task text DEFAULT NULL, p_job_id bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_count integer;
BEGIN
    UPDATE llm.job AS j
       SET state = 'pending',
           attempt = 0,
           scheduled_at = now(),
           finished_at = NULL,
           locked_by = NULL,
           lease_until = NULL,
           errors = j.errors || jsonb_build_object('at', now(), 'event', 'retried after failing')
      -- The latest failed job of each row, in one pass over the dead letters.
      FROM (SELECT DISTINCT ON (f.task, f.row_key) f.id
              FROM llm.job AS f
             WHERE f.state = 'failed' AND (p_task IS NULL OR f.task = p_task)
             ORDER BY f.task, f.row_key, f.id DESC) AS latest
     WHERE j.id = latest.id
       AND j.state = 'failed'
       AND (p_job_id IS NULL OR j.id = p_job_id)
       AND NOT EXISTS (SELECT 1 FROM llm.job AS p
                        WHERE p.state = 'pending' AND p.task = j.task AND p.row_key = j.row_key);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        PERFORM pg_notify('pgllm_jobs', '');
    END IF;
    RETURN v_count;
END
$fn$;

-- Deletes finished history (succeeded, superseded, skipped) older than p_older_than, at most
-- p_limit rows per call so that no call holds locks for long. Failed jobs are kept: they are the
-- dead letters. Returns the number deleted.
CREATE OR REPLACE FUNCTION llm.prune(p_older_than interval, p_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM llm.job AS j
     WHERE j.id IN (SELECT o.id FROM llm.job AS o
                     WHERE o.state IN ('succeeded', 'superseded', 'skipped')
                       AND o.finished_at < now() - p_older_than
                     ORDER BY o.finished_at
                     LIMIT p_limit);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$fn$;

-- Writes back a batch of answers in one round trip and one commit. The jobs of each task go through
-- the task's generated set-based function (complete_batch_function) in one subtransaction. Should that
-- fail (one answer that does not fit its column, a lock not granted in time), or for a task without one,
-- each job runs its task's complete function in its own subtransaction, so one job's error never undoes
-- another's written result; the error comes back in its row (error, error_code) and the worker handles
-- that job alone. Only functions registered in llm.task are called. The batch waits at most 20 ms for
-- any lock (error_code 55P03), so it never sits in a lock cycle with a user's transaction; such a job is
-- then written back on its own. Rows come back in the order given. The worker keeps batches at 64 jobs
-- or fewer (the subtransaction cache).
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
    v_batch_function regproc;
    v_at integer[];
    v_task_states text[];
    v_state text;
BEGIN
    PERFORM set_config('lock_timeout', '20ms', true);
    -- The worker's own commits do not wait for their WAL flush (see llm.claim_with_inputs).
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR v_task IN SELECT DISTINCT t FROM unnest(p_tasks) AS t LOOP
        v_at := ARRAY(SELECT i FROM generate_subscripts(p_job_ids, 1) AS i WHERE p_tasks[i] IS NOT DISTINCT FROM v_task ORDER BY i);
        v_function := NULL;
        v_batch_function := NULL;
        v_task_states := NULL;
        SELECT t.complete_function, t.complete_batch_function INTO v_function, v_batch_function
          FROM llm.task AS t WHERE t.name = v_task;
        IF v_batch_function IS NOT NULL THEN
            BEGIN
                EXECUTE format('SELECT %s($1, $2, $3, $4, $5, $6)', v_batch_function)
                   INTO v_task_states
                  USING ARRAY(SELECT p_job_ids[i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY n),
                        ARRAY(SELECT p_attempts[i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY n),
                        ARRAY(SELECT p_inputs_hashes[i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY n),
                        ARRAY(SELECT p_results[i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY n),
                        ARRAY(SELECT p_input_tokens[i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY n),
                        ARRAY(SELECT p_output_tokens[i] FROM unnest(v_at) WITH ORDINALITY AS a(i, n) ORDER BY n);
            EXCEPTION WHEN OTHERS THEN
                v_task_states := NULL; -- undone as a whole: each job of the task on its own, below
            END;
        END IF;
        FOR n IN 1 .. coalesce(array_length(v_at, 1), 0) LOOP
            IF v_task_states IS NOT NULL THEN
                v_states[v_at[n]] := v_task_states[n];
            ELSIF v_function IS NULL THEN
                v_errors[v_at[n]] := format('task %L is not in llm.task', v_task);
                v_codes[v_at[n]] := 'P0002';
            ELSE
                BEGIN
                    EXECUTE format('SELECT %s($1, $2, $3, $4, $5, $6)', v_function)
                       INTO v_state
                      USING p_job_ids[v_at[n]], p_attempts[v_at[n]], p_inputs_hashes[v_at[n]], p_results[v_at[n]],
                            p_input_tokens[v_at[n]], p_output_tokens[v_at[n]];
                    v_states[v_at[n]] := v_state;
                EXCEPTION WHEN OTHERS THEN
                    v_errors[v_at[n]] := SQLERRM;
                    v_codes[v_at[n]] := SQLSTATE;
                END;
            END IF;
        END LOOP;
    END LOOP;
    RETURN QUERY
        SELECT p_job_ids[i], v_states[i], v_errors[i], v_codes[i]
          FROM generate_subscripts(p_job_ids, 1) AS i
         ORDER BY i;
END
$fn$;

REVOKE ALL ON FUNCTION llm.complete_batch(text[], bigint[], integer[], text[], jsonb[], integer[], integer[]) FROM PUBLIC;

-- Waking workers. NOTIFY makes committing transactions queue behind one another (PostgreSQL holds a
-- database-wide lock from the NOTIFY until the commit is flushed), so the enqueue triggers notify only
-- when a worker sleeps. A worker about to sleep advertises it in llm.sleeping_worker, then checks that
-- no transaction that enqueued without seeing it is still open (such a transaction holds advisory
-- lock (1348954220, 1) shared until it ends); while one is, the worker looks at the queue again shortly
-- instead of sleeping. So every job committed before is visible to the worker's next claim, and every
-- later enqueue notifies. A busy worker claims again after each batch anyway.
CREATE UNLOGGED TABLE IF NOT EXISTS llm.sleeping_worker (
    worker text PRIMARY KEY,
    since  timestamptz NOT NULL DEFAULT now()
);

-- The generated enqueue triggers run these same steps inline (a call would cost each enqueue a function
-- call and a search_path change); the write-backs' rare re-enqueue calls the function.
CREATE OR REPLACE FUNCTION llm.wake_workers()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- This snapshot may predate a worker's advertisement: always notify.
        PERFORM pg_notify('pgllm_jobs', '');
    ELSIF NOT pg_try_advisory_xact_lock_shared(1348954220, 1) THEN
        -- A worker is checking for open enqueuers right now: it is about to sleep.
        PERFORM pg_notify('pgllm_jobs', '');
    ELSIF EXISTS (SELECT 1 FROM llm.sleeping_worker) THEN
        PERFORM pg_notify('pgllm_jobs', '');
    END IF;
END
$fn$;

-- A worker is about to wait for NOTIFY: from the commit of this call on, enqueuers notify.
CREATE OR REPLACE FUNCTION llm.worker_sleeps(p_worker text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    INSERT INTO llm.sleeping_worker AS s (worker) VALUES (p_worker)
    ON CONFLICT (worker) DO UPDATE SET since = now();
    -- Workers that stopped without saying so (killed while asleep) would make every enqueue notify.
    DELETE FROM llm.sleeping_worker AS s WHERE s.since < now() - interval '1 hour';
$fn$;

-- Called in a transaction after llm.worker_sleeps committed: true when no transaction that enqueued
-- without seeing the sleeping worker is still open, so one more claim sees all it would otherwise miss.
CREATE OR REPLACE FUNCTION llm.enqueuers_settled()
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_try_advisory_xact_lock(1348954220, 1);
$fn$;

-- The worker has work again (or stops): enqueuers stop notifying it.
CREATE OR REPLACE FUNCTION llm.worker_wakes(p_worker text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    DELETE FROM llm.sleeping_worker WHERE worker = p_worker;
$fn$;

-- llm.claim and each claimed task's generated inputs function in one round trip: the jobs with the
-- current values their prompts read (inputs NULL: the row is gone or a required input is null). A task
-- whose inputs cannot be read (or that is no longer registered) comes back with inputs_error set and no
-- inputs; its jobs are still claimed, so the worker settles them and other tasks are not held up.
-- p_only / p_except as in llm.claim.
CREATE OR REPLACE FUNCTION llm.claim_with_inputs(p_worker text, p_limit integer, p_lease_seconds double precision,
                                                 p_only text[] DEFAULT NULL, p_except text[] DEFAULT NULL)
RETURNS TABLE (id bigint, task text, attempt integer, max_attempts integer, inputs text, inputs_hash text, inputs_error text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_ids bigint[];
    v_tasks text[];
    v_attempts integer[];
    v_max_attempts integer[];
    v_task text;
    v_function regproc;
    v_error text;
    v_input_ids bigint[];
    v_inputs text[];
    v_hashes text[];
BEGIN
    -- The worker's claims and write-backs commit without waiting for their WAL flush: they no longer
    -- queue behind the application's commits for the disk, and a claim reaches the model sooner. A
    -- server crash can lose the last few hundred milliseconds of them; the jobs then run again (their
    -- lease expires, or the claim never happened), as after a worker crash: at least once, as always.
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT array_agg(c.id ORDER BY c.id), array_agg(c.task ORDER BY c.id), array_agg(c.attempt ORDER BY c.id), array_agg(c.max_attempts ORDER BY c.id)
      INTO v_ids, v_tasks, v_attempts, v_max_attempts
      FROM llm.claim(p_worker, p_limit, p_lease_seconds, p_only, p_except) AS c;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    FOR v_task IN SELECT DISTINCT t FROM unnest(v_tasks) AS t LOOP
        v_error := NULL;
        v_input_ids := NULL;
        v_inputs := NULL;
        v_hashes := NULL;
        SELECT r.inputs_function INTO v_function FROM llm.task AS r WHERE r.name = v_task;
        IF v_function IS NULL THEN
            v_error := format('task %L is not in llm.task (removed from the declarations?)', v_task);
        ELSE
            BEGIN
                EXECUTE format('SELECT array_agg(i.job_id), array_agg(i.inputs::text), array_agg(i.inputs_hash) FROM %s($1) AS i', v_function)
                   INTO v_input_ids, v_inputs, v_hashes
                  USING (SELECT array_agg(c.id) FROM unnest(v_ids, v_tasks) AS c(id, task) WHERE c.task = v_task);
            EXCEPTION WHEN OTHERS THEN
                v_error := 'could not read the row: ' || SQLERRM;
            END;
        END IF;
        RETURN QUERY
            SELECT c.id, c.task, c.attempt, c.max_attempts, i.inputs, i.hash, v_error
              FROM unnest(v_ids, v_tasks, v_attempts, v_max_attempts) AS c(id, task, attempt, max_attempts)
              LEFT JOIN unnest(v_input_ids, v_inputs, v_hashes) AS i(job_id, inputs, hash) ON i.job_id = c.id
             WHERE c.task = v_task;
    END LOOP;
END
$fn$;

-- ===========================================================================================
-- Operations: token usage and cost, backfill of existing rows.
-- ===========================================================================================

-- Optional prices, per million tokens, for cost estimates. The row '*' prices every model that has
-- no row of its own (and tasks that name no model, which use the worker's default model).
-- Filled by SQL, or from the PgLlm:Prices configuration by the hosted worker and the command line.
CREATE TABLE IF NOT EXISTS llm.model_price (
    model              text PRIMARY KEY,
    input_per_million  numeric NOT NULL CHECK (input_per_million >= 0),
    output_per_million numeric NOT NULL CHECK (output_per_million >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Tokens used per task and day (UTC), from the finished jobs still kept (see Worker:Retention), with
-- a cost estimate when llm.model_price has a price for the task's model (or a '*' row).
CREATE OR REPLACE VIEW llm.usage_daily AS
SELECT j.task,
       (j.finished_at AT TIME ZONE 'UTC')::date AS day,
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
 WHERE j.finished_at IS NOT NULL
   AND (j.input_tokens IS NOT NULL OR j.output_tokens IS NOT NULL)
 GROUP BY j.task, (j.finished_at AT TIME ZONE 'UTC')::date, t.model;

-- Where a backfill of a task has got to, so that an interrupted backfill resumes where it stopped.
CREATE TABLE IF NOT EXISTS llm.backfill (
    task        text PRIMARY KEY,
    only_empty  boolean NOT NULL,
    last_key    jsonb,
    scanned     bigint NOT NULL DEFAULT 0,
    enqueued    bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- Enqueues existing rows of a task's table, one batch of at most p_batch rows (in key order) per
-- call, and records how far it got in llm.backfill in the same transaction: call it until done is
-- true; an interrupted backfill resumes after the last committed batch. p_only_empty enqueues only
-- rows where a target column is null; otherwise every row. Either way only rows whose read columns
-- are all non-null (as the triggers require) and that have no pending or running job of the task.
-- p_restart starts over from the first row. Table and column names come from llm.task, which only
-- migrations write, and are quoted with format('%I').
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

    -- One backfill of a task at a time; a second caller waits for the batch in progress.
    INSERT INTO llm.backfill AS b (task, only_empty)
    VALUES (p_task, p_only_empty)
    ON CONFLICT (task) DO NOTHING;
    SELECT * INTO v_state FROM llm.backfill AS b WHERE b.task = p_task FOR UPDATE;
    IF p_restart OR v_state.only_empty IS DISTINCT FROM p_only_empty OR v_state.finished_at IS NOT NULL THEN
        UPDATE llm.backfill AS b
           SET only_empty = p_only_empty, last_key = NULL, scanned = 0, enqueued = 0,
               started_at = now(), updated_at = now(), finished_at = NULL
         WHERE b.task = p_task
        RETURNING * INTO v_state;
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
             INSERT INTO llm.job (task, row_key, max_attempts)
             SELECT $1, b.row_key, $2
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
     USING p_task, v_task.max_attempts, v_state.last_key, p_batch;

    UPDATE llm.backfill AS b
       SET last_key = coalesce(v_last, b.last_key),
           scanned = b.scanned + v_scanned,
           enqueued = b.enqueued + v_enqueued,
           updated_at = now(),
           finished_at = CASE WHEN v_scanned < p_batch THEN now() END
     WHERE b.task = p_task
    RETURNING * INTO v_state;
    IF v_enqueued > 0 THEN
        PERFORM pg_notify('pgllm_jobs', '');
    END IF;
    RETURN QUERY SELECT v_scanned, v_enqueued, v_state.scanned, v_state.enqueued, v_scanned < p_batch;
END
$fn$;

-- Optional answer cache (PgLlm:AnswerCache:Enabled, off by default): a request identical to an
-- earlier one (model, messages, response schema, sampling settings; the messages carry the row's
-- inputs) is answered from here instead of a new paid call. key is a SHA-256 of the request.
-- Empty it with TRUNCATE llm.answer_cache; a bad cached answer is removed with DELETE ... WHERE key = ...
CREATE TABLE IF NOT EXISTS llm.answer_cache (
    key         text PRIMARY KEY,
    model       text,
    answer      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    hits        bigint NOT NULL DEFAULT 0,
    last_hit_at timestamptz
);

-- What the queue looks like to the roles that write the tables: every job of a table the caller may
-- read (USAGE on its schema and SELECT on it), and nothing else. Runs with the owner's rights on
-- llm.job, so the filter is the only way in; security_barrier keeps a caller's own functions in
-- WHERE from seeing rows the filter drops. The privilege checks take oids: no name is looked up
-- with the caller's rights. Callers need USAGE on schema llm (GRANT USAGE ON SCHEMA llm TO my_app_role).
CREATE OR REPLACE VIEW llm.job_status WITH (security_barrier = true) AS
SELECT j.id, j.task, t.table_schema, t.table_name, j.row_key, j.state, j.attempt, j.max_attempts,
       j.scheduled_at, j.created_at, j.attempted_at, j.finished_at, j.last_error, j.errors
  FROM llm.job AS j
  JOIN llm.task AS t ON t.name = j.task
  JOIN pg_catalog.pg_namespace AS n ON n.nspname = t.table_schema
  JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = t.table_name
 WHERE pg_catalog.has_schema_privilege(n.oid, 'USAGE')
   AND pg_catalog.has_table_privilege(c.oid, 'SELECT');

-- Privileges. Nothing in schema llm is anyone's but the owner's (the role running the migrations),
-- except what is granted here: application roles get nothing (their triggers' functions run with
-- the owner's rights), the worker gets the calls of its loop and read access to the registry and
-- the queue. Generated table scripts grant pgllm_worker their inputs and complete functions.
REVOKE ALL ON SCHEMA llm FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA llm FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA llm FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM PUBLIC;
GRANT USAGE ON SCHEMA llm TO pgllm_worker;
GRANT SELECT ON llm.task, llm.job TO pgllm_worker;
GRANT EXECUTE ON FUNCTION llm.claim(text, integer, double precision),
                          llm.claim(text, integer, double precision, text[], text[]),
                          llm.fail(bigint, integer, text, double precision, text),
                          llm.skip(bigint, integer, text),
                          llm.release(bigint, integer),
                          llm.rescue(integer),
                          llm.prune(interval, integer)
   TO pgllm_worker;
-- The batched calls run with the worker's own rights: they reach the queue only through the
-- functions above and the task's generated functions (named by the registry, granted per table).
GRANT EXECUTE ON FUNCTION llm.claim_with_inputs(text, integer, double precision, text[], text[]),
                          llm.complete_batch(text[], bigint[], integer[], text[], jsonb[], integer[], integer[]),
                          llm.worker_sleeps(text),
                          llm.worker_wakes(text),
                          llm.enqueuers_settled()
   TO pgllm_worker;
GRANT SELECT ON llm.job_status TO PUBLIC;
-- Operations: the worker keeps the answer cache and the configured prices, and reads usage.
-- Backfills and re-drives are the owner's (they read user tables and write the queue).
GRANT SELECT, INSERT, UPDATE, DELETE ON llm.answer_cache TO pgllm_worker;
GRANT SELECT, INSERT, UPDATE ON llm.model_price TO pgllm_worker;
GRANT SELECT ON llm.usage_daily TO pgllm_worker;
