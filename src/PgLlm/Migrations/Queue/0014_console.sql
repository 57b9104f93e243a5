-- PgLlm queue, step 14: the operations console's role and action log.
--   * pgllm_console: the group role the operations console (PgLlm.OperationsConsole, `pgllm console`) runs its
--     queries as (SET ROLE pgllm_console; the login it connects with is made a member: GRANT pgllm_console TO
--     my_login). It reads PgLlm's schema (the queue, the registry, the governor, budgets, runs, batches, row
--     versions, edited cells) and calls the actions it offers; it has no privilege on any user table: of a row
--     it sees the key and the answers the jobs recorded (llm.job.row_key, llm.job.answer), nothing else.
--   * llm.console_action: every action taken in the console (retry, pause, resume, release a cell, cancel a
--     batch), with who (the user the host authenticated), when, the database role and what it touched, written
--     by llm.console_log in the same transaction as the action.
--   * llm.console_coverage(task): how many of a task's rows hold an answer (llm.row_version) against the size of
--     its table as PostgreSQL's statistics estimate it: no scan of, and no access to, the user's table.
--   * llm.console_release_cell: llm.release_cell for the console, whose role may not update user tables (which
--     llm.release_cell checks); only a target column of a declared task's table.
--   * job_done_key: the jobs out of pending by (task, row key), so that a row's history and the search by row
--     key use an index (the pending ones are in job_pending_key). A new job is pending and does not enter it.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgllm_console') THEN
        BEGIN
            CREATE ROLE pgllm_console NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- created at the same moment by a migration of another database
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'PgLlm needs the role pgllm_console, and the role running the migrations (%) may not create roles', current_user
                      USING ERRCODE = 'insufficient_privilege',
                            HINT = 'As a role with CREATEROLE run: CREATE ROLE pgllm_console NOLOGIN; then run the migrations again.';
        END;
    END IF;
END
$roles$;

CREATE TABLE llm.console_action (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    role   text NOT NULL,
    action text NOT NULL,
    target text,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);

COMMENT ON TABLE llm.console_action IS 'Actions taken in the operations console: who (the user the host authenticated), when, the database role it ran as, the action, what it touched and its outcome; written by llm.console_log in the action''s transaction.';

CREATE INDEX console_action_at ON llm.console_action (at);

-- A row's jobs out of pending (the pending one is found by job_pending_key).
CREATE INDEX job_done_key ON llm.job (task, row_key) WHERE state <> 'pending';

-- Records an action in the log; called in the action's own transaction, so that an action that rolls back
-- leaves no entry and one that commits always has one. Returns the entry's id.
CREATE FUNCTION llm.console_log(p_actor text, p_action text, p_target text, p_detail jsonb DEFAULT '{}'::jsonb)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_id bigint;
BEGIN
    IF p_actor IS NULL OR btrim(p_actor) = '' THEN
        RAISE EXCEPTION 'llm.console_log: an action needs an actor' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO llm.console_action (actor, role, action, target, detail)
    VALUES (p_actor, coalesce(nullif(current_setting('role'), 'none'), session_user::text), p_action, p_target,
            coalesce(p_detail, '{}'::jsonb))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$fn$;

-- Rows of a task that hold an answer (llm.row_version: one row per row written), those among them written by another
-- definition than the task's current one (stale; rows filled before versions were kept are not counted), and the
-- rows of its table as the planner's statistics count them (pg_class.reltuples; NULL before the table was first
-- analyzed). Reads no user table.
CREATE FUNCTION llm.console_coverage(p_task text, OUT filled bigint, OUT stale bigint, OUT table_rows bigint)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT f.filled, f.stale,
           (SELECT CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END
              FROM pg_catalog.pg_namespace AS n
              JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = t.table_name
             WHERE n.nspname = t.table_schema)
      FROM llm.task AS t
     CROSS JOIN LATERAL (SELECT count(*) AS filled,
                                count(*) FILTER (WHERE v.definition_hash IS DISTINCT FROM t.definition_hash) AS stale
                           FROM llm.row_version AS v
                          WHERE v.task = t.name) AS f
     WHERE t.name = p_task;
$fn$;

-- Removes the edited mark of a target cell (as llm.release_cell), for the console: the table must be a declared
-- task's and the column one of its targets. The console's role may not update user tables, so the check of
-- llm.release_cell (UPDATE on the column) is replaced by that one; the action is logged by the caller.
CREATE FUNCTION llm.console_release_cell(p_table regclass, p_row_key jsonb, p_column text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_schema text;
    v_table text;
BEGIN
    SELECT n.nspname, c.relname INTO v_schema, v_table
      FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     WHERE c.oid = p_table;
    IF NOT EXISTS (SELECT 1 FROM llm.task AS t
                    WHERE t.table_schema = v_schema AND t.table_name = v_table AND p_column = ANY (t.target_columns)) THEN
        RAISE EXCEPTION '% is not a target column of a PgLlm task of %', coalesce(quote_literal(p_column), 'NULL'), p_table
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM llm.edited_cell AS e
     WHERE e.table_schema = v_schema AND e.table_name = v_table AND e.row_key = p_row_key AND e.column_name = p_column;
    RETURN FOUND;
END
$fn$;

-- Privileges: the console's role reads PgLlm's schema and calls the actions it offers, nothing of the user's tables.
REVOKE ALL ON llm.console_action FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.console_log(text, text, text, jsonb), llm.console_coverage(text),
                       llm.console_release_cell(regclass, jsonb, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA llm TO pgllm_console;
GRANT SELECT ON llm.task, llm.job, llm.endpoint_state, llm.endpoint_bucket, llm.endpoint_bucket_use, llm.budget,
                llm.run, llm.batch, llm.row_version, llm.edited_cell, llm.model_price, llm.console_action
   TO pgllm_console;
GRANT EXECUTE ON FUNCTION llm.console_log(text, text, text, jsonb), llm.console_coverage(text),
                          llm.console_release_cell(regclass, jsonb, text),
                          llm.retry_failed(text, bigint), llm.pause_task(text, text), llm.resume_task(text),
                          llm.batch_cancel(bigint, text), llm.budget_state(), llm.run_status(), llm.run_progress(bigint)
   TO pgllm_console;
