-- PgLlm queue, step 12: a plan before a change costs money, and a comparison before rolling it out.
--   * llm.plan_inputs(task, row keys) reads, for the given rows of a task's table, what its prompt reads (the read
--     columns, as the task's generated inputs function builds them) and what its targets hold now: for a plan to
--     render the rows' prompts (under the current definition and under the one that wrote them), and for a
--     comparison to set the current answers against new ones. It only reads.
--   * llm.task_token_history(task) sums up the task's answered jobs per definition: first-attempt, succeeded and
--     not from the answer cache, their average input and output tokens and call time, for the plan's estimates.
--   * llm.compare_sample keeps every answer `pgllm compare` got for a row under the current definition, beside the
--     value the row holds (written by an older definition), per run: nothing of it reaches the task's table or
--     llm.job.

CREATE SEQUENCE llm.compare_run_id;

CREATE TABLE llm.compare_sample (
    run_id         bigint NOT NULL,
    task           text NOT NULL,
    row_key        jsonb NOT NULL,
    old_answer     jsonb,
    new_answer     jsonb,
    agreement      jsonb,
    valid          boolean NOT NULL,
    error          text,
    input_tokens   integer,
    output_tokens  integer,
    estimated_cost numeric,
    compared_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, row_key)
);

CREATE INDEX compare_sample_task ON llm.compare_sample (task, run_id);

COMMENT ON TABLE llm.compare_sample IS 'The answers of each `pgllm compare` run (run_id from llm.compare_run_id): per row the targets'' values when compared (old_answer) and the current definition''s answer (new_answer, validated; NULL when invalid or failed), the agreement of each target (0 to 1), the call''s tokens and cost. Never written back.';
COMMENT ON COLUMN llm.compare_sample.agreement IS 'Per target: 1 when the new value equals the old (exact for enums, booleans, numbers, dates; normalized Levenshtein similarity of lower-cased, whitespace-collapsed text for free text), NULL when there is no valid answer.';

-- The rows p_row_keys of a task's table: their key, the inputs its prompt reads (jsonb_build_object of the read
-- columns, as the generated inputs function builds them) and the values of its targets. Keys not in the table
-- are left out. Each key is matched by the table's own column types (jsonb_populate_record), so the key's index serves.
CREATE FUNCTION llm.plan_inputs(p_task text, p_row_keys jsonb[])
RETURNS TABLE (row_key jsonb, inputs jsonb, targets jsonb)
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
    RETURN QUERY EXECUTE format(
        'SELECT k.row_key, jsonb_build_object(%s), jsonb_build_object(%s)'
        ' FROM unnest($1) AS k(row_key) CROSS JOIN LATERAL jsonb_populate_record(NULL::%I.%I, k.row_key) AS r'
        ' JOIN %I.%I AS t ON %s ORDER BY 1',
        coalesce((SELECT string_agg(format('%L, t.%I', c, c), ', ' ORDER BY o) FROM unnest(v_task.read_columns) WITH ORDINALITY AS x(c, o)), ''),
        (SELECT string_agg(format('%L, t.%I', c, c), ', ' ORDER BY o) FROM unnest(v_task.target_columns) WITH ORDINALITY AS x(c, o)),
        v_task.table_schema, v_task.table_name, v_task.table_schema, v_task.table_name,
        (SELECT string_agg(format('t.%I = r.%I', k, k), ' AND ') FROM unnest(v_task.key_columns) AS x(k)))
      USING p_row_keys;
END
$fn$;

-- Per definition of a task: its answered jobs still kept (first attempt, succeeded, not from the answer cache,
-- tokens reported), their average input and output tokens and their average call time (claim to settle).
CREATE FUNCTION llm.task_token_history(p_task text)
RETURNS TABLE (definition_hash text, jobs bigint, avg_input_tokens double precision, avg_output_tokens double precision,
               avg_call_seconds double precision)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT j.task_hash, count(*), avg(j.input_tokens)::float8, avg(j.output_tokens)::float8,
           avg(extract(epoch FROM j.finished_at - j.attempted_at))::float8
      FROM llm.job AS j
     WHERE j.task = p_task AND j.state = 'succeeded' AND j.attempt = 1 AND j.cache_hit IS NOT TRUE
       AND j.input_tokens IS NOT NULL AND j.output_tokens IS NOT NULL AND j.task_hash IS NOT NULL
     GROUP BY j.task_hash
$fn$;

REVOKE ALL ON FUNCTION llm.plan_inputs(text, jsonb[]), llm.task_token_history(text) FROM PUBLIC;
-- Read like llm.job; written by whoever runs `pgllm compare` (the migrating role owns it).
GRANT SELECT ON llm.compare_sample TO pgllm_worker;
