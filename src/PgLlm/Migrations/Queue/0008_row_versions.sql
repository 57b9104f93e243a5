-- PgLlm queue, step 8: every written value knows its version.
--   * llm.task_definition keeps every definition a task has had (prompt, system prompt, model, schema,
--     options: what its definition_hash is made of), filled by a trigger on llm.task, so that a plan can
--     say what changed and render the rows' prompts under an older definition.
--   * llm.row_version holds one small row per (task, row key): which definition last wrote the row's
--     targets, when, and by which job. The write-back keeps it (llm.settle_unwritten records the rows
--     it wrote, in the same statement's transaction); nothing scans the user's tables for it.
--   * llm.task_rows(task) counts a task's rows as current, stale (written by another definition, or
--     filled before versions were kept) and never filled; llm.plan_rows(task, which, limit) gives the
--     keys of the stale or never-filled rows, for a re-run, a backfill or a comparison.
-- Rows written before this step: the latest succeeded job of each (task, row) still in llm.job gives
-- the definition it recorded (llm.job.task_hash, kept since step 4); rows whose jobs were pruned, or
-- that were written before step 4, have no version and count as stale when a target holds a value.

CREATE TABLE llm.task_definition (
    task              text NOT NULL,
    definition_hash   text NOT NULL,
    prompt            text NOT NULL,
    system_prompt     text,
    json_schema       json NOT NULL,
    model             text,
    temperature       double precision,
    max_output_tokens integer,
    registered_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, definition_hash)
);

COMMENT ON TABLE llm.task_definition IS 'Every definition each task has had (llm.task''s prompt, system prompt, schema, model and options under their definition_hash), kept while the task is declared.';

CREATE TABLE llm.row_version (
    task            text NOT NULL,
    row_key         jsonb NOT NULL,
    definition_hash text,
    written_at      timestamptz NOT NULL,
    job_id          bigint,
    PRIMARY KEY (task, row_key)
);

COMMENT ON TABLE llm.row_version IS 'Per task and row: the definition (llm.task_definition) whose answer the write-back last wrote to the row''s targets, when, and by which job; NULL definition_hash: written before versions were kept.';

-- The definitions a task has had, and nothing kept for a task that is no longer declared.
CREATE FUNCTION llm.task_history()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM llm.task_definition AS d WHERE d.task = OLD.name;
        DELETE FROM llm.row_version AS v WHERE v.task = OLD.name;
        RETURN NULL;
    END IF;
    INSERT INTO llm.task_definition (task, definition_hash, prompt, system_prompt, json_schema, model, temperature, max_output_tokens)
    VALUES (NEW.name, NEW.definition_hash, NEW.prompt, NEW.system_prompt, NEW.json_schema, NEW.model, NEW.temperature, NEW.max_output_tokens)
    ON CONFLICT (task, definition_hash) DO NOTHING;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER task_history AFTER INSERT OR UPDATE OF definition_hash OR DELETE ON llm.task
    FOR EACH ROW EXECUTE FUNCTION llm.task_history();

INSERT INTO llm.task_definition (task, definition_hash, prompt, system_prompt, json_schema, model, temperature, max_output_tokens, registered_at)
SELECT t.name, t.definition_hash, t.prompt, t.system_prompt, t.json_schema, t.model, t.temperature, t.max_output_tokens, t.updated_at
  FROM llm.task AS t;

INSERT INTO llm.row_version (task, row_key, definition_hash, written_at, job_id)
SELECT DISTINCT ON (j.task, j.row_key) j.task, j.row_key, j.task_hash, j.finished_at, j.id
  FROM llm.job AS j
 WHERE j.state = 'succeeded' AND j.task IN (SELECT t.name FROM llm.task AS t)
 ORDER BY j.task, j.row_key, j.id DESC;

-- Every write-back ends with llm.settle_unwritten (the jobs it settled, the ones whose rows it wrote). Step 4's
-- function keeps its body under a new name, llm.settle_rest; llm.settle_unwritten now records, first, the
-- version of each row written (the definition its answer was settled under, llm.job.task_hash), then hands
-- everything to it. A batch writes a row once (the write-back's UPDATE takes one job per row); a job settled
-- again on its own records its row in that call.
ALTER FUNCTION llm.settle_unwritten(text, bigint[], integer[], text[], jsonb[], integer[], integer[], integer[], integer[], text[], boolean[])
    RENAME TO settle_rest;

CREATE FUNCTION llm.settle_unwritten(p_task text, p_job_ids bigint[], p_attempts integer[], p_inputs_hashes text[], p_results jsonb[],
                                     p_input_tokens integer[], p_output_tokens integer[], p_settled integer[], p_written integer[],
                                     p_models text[], p_cache_hits boolean[])
RETURNS text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    -- PL/pgSQL so that the plan is cached: it runs in every write-back.
    IF cardinality(p_written) > 0 THEN
        INSERT INTO llm.row_version AS v (task, row_key, definition_hash, written_at, job_id)
        SELECT DISTINCT ON (j.row_key) p_task, j.row_key, j.task_hash, now(), j.id
          FROM llm.job AS j
         WHERE j.id = ANY (ARRAY(SELECT p_job_ids[w.n] FROM unnest(p_written) AS w(n)))
         ORDER BY j.row_key, j.id DESC
        ON CONFLICT (task, row_key) DO UPDATE
           SET definition_hash = excluded.definition_hash, written_at = excluded.written_at, job_id = excluded.job_id;
    END IF;
    RETURN llm.settle_rest(p_task, p_job_ids, p_attempts, p_inputs_hashes, p_results, p_input_tokens, p_output_tokens,
                           p_settled, p_written, p_models, p_cache_hits);
END
$fn$;

-- The FROM of a task's rows with their version: the task's table (t) joined to its versions (v) by key
-- (key_object: the row's key as jobs key it), and the condition that some target holds a value
-- (any_target). Shared by llm.task_rows and llm.plan_rows.
CREATE FUNCTION llm.task_rows_source(p_task text, OUT from_clause text, OUT key_object text, OUT any_target text, OUT current_hash text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_task llm.task;
BEGIN
    SELECT * INTO v_task FROM llm.task AS t WHERE t.name = p_task;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'task % is not declared (llm.task has no such row)', p_task USING ERRCODE = 'P0002';
    END IF;
    key_object := format('jsonb_build_object(%s)',
                         (SELECT string_agg(format('%L, t.%I', k, k), ', ' ORDER BY o) FROM unnest(v_task.key_columns) WITH ORDINALITY AS c(k, o)));
    from_clause := format('%I.%I AS t LEFT JOIN llm.row_version AS v ON v.task = %L AND v.row_key = %s',
                          v_task.table_schema, v_task.table_name, p_task, key_object);
    any_target := (SELECT string_agg(format('t.%I IS NOT NULL', c), ' OR ') FROM unnest(v_task.target_columns) AS c);
    current_hash := v_task.definition_hash;
END
$fn$;

-- A task's rows by version: current (written by the task's definition now), stale (written by another
-- one, or holding a value with no version: filled before versions were kept) and never filled. One scan
-- of the task's table.
CREATE FUNCTION llm.task_rows(p_task text)
RETURNS TABLE (total bigint, current bigint, stale bigint, never_filled bigint)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_source record;
BEGIN
    SELECT * INTO v_source FROM llm.task_rows_source(p_task);
    RETURN QUERY EXECUTE format(
        'SELECT count(*), count(*) FILTER (WHERE v.definition_hash = $1),'
        ' count(*) FILTER (WHERE v.task IS NOT NULL AND v.definition_hash IS DISTINCT FROM $1 OR v.task IS NULL AND (%s)),'
        ' count(*) FILTER (WHERE v.task IS NULL AND NOT (%s))'
        ' FROM %s', v_source.any_target, v_source.any_target, v_source.from_clause)
      USING v_source.current_hash;
END
$fn$;

-- The keys of a task's stale rows (p_which 'stale') or never-filled ones ('never_filled'), in key order,
-- at most p_limit (NULL: all).
CREATE FUNCTION llm.plan_rows(p_task text, p_which text, p_limit bigint DEFAULT NULL)
RETURNS TABLE (row_key jsonb, definition_hash text)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_source record;
    v_where text;
BEGIN
    SELECT * INTO v_source FROM llm.task_rows_source(p_task);
    v_where := CASE p_which
        WHEN 'stale' THEN format('v.task IS NOT NULL AND v.definition_hash IS DISTINCT FROM $1 OR v.task IS NULL AND (%s)', v_source.any_target)
        WHEN 'never_filled' THEN format('v.task IS NULL AND NOT (%s)', v_source.any_target)
    END;
    IF v_where IS NULL THEN
        RAISE EXCEPTION 'which rows: ''stale'' or ''never_filled'', not %', coalesce(quote_literal(p_which), 'NULL') USING ERRCODE = '22023';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT %s, v.definition_hash FROM %s WHERE %s ORDER BY 1 LIMIT $2', v_source.key_object, v_source.from_clause, v_where)
      USING v_source.current_hash, p_limit;
END
$fn$;

REVOKE ALL ON FUNCTION llm.settle_unwritten(text, bigint[], integer[], text[], jsonb[], integer[], integer[], integer[], integer[], text[], boolean[]),
                       llm.task_history(), llm.task_rows_source(text), llm.task_rows(text), llm.plan_rows(text, text, bigint) FROM PUBLIC;
-- Read like llm.job; written only through the tasks' write-backs (SECURITY DEFINER).
GRANT SELECT ON llm.row_version, llm.task_definition TO pgllm_worker;
