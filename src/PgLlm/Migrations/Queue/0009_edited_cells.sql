-- PgLlm queue, step 9: a person's edit is kept.
--   * llm.edited_cell holds one row per target cell changed by anyone other than PgLlm (an UPDATE by an
--     application or a person): the table, the row's key as jobs key it (llm.job.row_key), the column,
--     when and by whom. Each table's script attaches llm.mark_edited as one trigger ("pgllm:edited"),
--     AFTER UPDATE OF the table's target columns, whose WHEN clause compares the targets' old and new
--     values and is false during PgLlm's own write-back (which sets pgllm.write_back to 'on' for its
--     UPDATE): a write-back calls no function per row. An INSERT is not an edit.
--   * A task's write-back keeps an edited cell of an IfUnedited target (the default), keeps a non-NULL
--     cell of a Never target and writes an Always target whatever it holds; the job still succeeds and
--     its answer record (llm.job.answer) keeps the model's answer.
--   * Deleting a row (or truncating the table) forgets its marks: a new row of the same key is not edited.
--   * llm.release_cell(table, key, column) removes a mark, so that the next job writes the cell again;
--     llm.edited_cells(task) counts the edited cells among a task's targets (pgllm status, plan).

CREATE TABLE llm.edited_cell (
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    row_key      jsonb NOT NULL,
    column_name  text NOT NULL,
    edited_at    timestamptz NOT NULL DEFAULT now(),
    edited_by    text NOT NULL DEFAULT current_user,
    PRIMARY KEY (table_schema, table_name, row_key, column_name)
);

COMMENT ON TABLE llm.edited_cell IS 'Target cells changed by anyone other than PgLlm (row key as llm.job.row_key): the write-back keeps them unless the target is declared Overwrite = Always; released with llm.release_cell.';

-- The role the caller acts as: SET ROLE's role, else the session's. In a SECURITY DEFINER function
-- current_user is the function's owner; the setting 'role' is the caller's.
CREATE FUNCTION llm.acting_role()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(nullif(current_setting('role'), 'none'), session_user::text);
$fn$;

-- The trigger each table's script attaches. Arguments: the number of key columns, the key columns, then
-- the table's target columns. UPDATE (for each row, already filtered by the trigger's WHEN clause):
-- marks each target whose value changed. DELETE (for each statement, the deleted rows as pgllm_old) and
-- TRUNCATE: forgets the rows' marks, when the table has any.
CREATE FUNCTION llm.mark_edited()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_keys integer := TG_ARGV[0]::integer;
    v_old jsonb;
    v_new jsonb;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        v_old := to_jsonb(OLD);
        v_new := to_jsonb(NEW);
        INSERT INTO llm.edited_cell AS e (table_schema, table_name, row_key, column_name, edited_at, edited_by)
        SELECT TG_TABLE_SCHEMA, TG_TABLE_NAME,
               (SELECT jsonb_object_agg(TG_ARGV[k], v_new -> TG_ARGV[k]) FROM generate_series(1, v_keys) AS k),
               TG_ARGV[c], now(), llm.acting_role()
          FROM generate_series(v_keys + 1, TG_NARGS - 1) AS c
         WHERE (v_old -> TG_ARGV[c]) IS DISTINCT FROM (v_new -> TG_ARGV[c])
        ON CONFLICT (table_schema, table_name, row_key, column_name) DO UPDATE
           SET edited_at = excluded.edited_at, edited_by = excluded.edited_by;
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM llm.edited_cell AS e WHERE e.table_schema = TG_TABLE_SCHEMA AND e.table_name = TG_TABLE_NAME) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM llm.edited_cell AS e WHERE e.table_schema = TG_TABLE_SCHEMA AND e.table_name = TG_TABLE_NAME;
    ELSE
        EXECUTE format('DELETE FROM llm.edited_cell AS e USING (SELECT DISTINCT jsonb_build_object(%s) AS row_key FROM pgllm_old AS o) AS o'
                       ' WHERE e.table_schema = $1 AND e.table_name = $2 AND e.row_key = o.row_key',
                       (SELECT string_agg(format('%L, o.%I', TG_ARGV[k], TG_ARGV[k]), ', ' ORDER BY k) FROM generate_series(1, v_keys) AS k))
          USING TG_TABLE_SCHEMA, TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$fn$;

-- Removes the edited mark of one cell (p_row_key as llm.job.row_key, e.g. '{"id": 42}'; p_column the
-- column's name): the next job of the row writes the cell again. True when a mark was removed. Anyone
-- may call it for a cell they may UPDATE (the column privilege of the role they act as).
CREATE FUNCTION llm.release_cell(p_table regclass, p_row_key jsonb, p_column text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_schema text;
    v_table text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                    WHERE a.attrelid = p_table AND a.attname = p_column AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'table % has no column %', p_table, coalesce(quote_literal(p_column), 'NULL') USING ERRCODE = '42703';
    END IF;
    IF NOT pg_catalog.has_column_privilege(llm.acting_role(), p_table, p_column, 'UPDATE') THEN
        RAISE EXCEPTION 'permission denied to release a cell of % (it takes UPDATE on column %)', p_table, quote_ident(p_column)
              USING ERRCODE = '42501';
    END IF;
    SELECT n.nspname, c.relname INTO v_schema, v_table
      FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     WHERE c.oid = p_table;
    DELETE FROM llm.edited_cell AS e
     WHERE e.table_schema = v_schema AND e.table_name = v_table AND e.row_key = p_row_key AND e.column_name = p_column;
    RETURN FOUND;
END
$fn$;

-- The edited cells among a task's targets (rows still marked; a deleted row's marks are gone with it).
CREATE FUNCTION llm.edited_cells(p_task text)
RETURNS bigint
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT count(*)
      FROM llm.task AS t
      JOIN llm.edited_cell AS e ON e.table_schema = t.table_schema AND e.table_name = t.table_name
     WHERE t.name = p_task AND e.column_name = ANY (t.target_columns);
$fn$;

-- Privileges: marks are written by the trigger (the owner's rights) and removed through llm.release_cell,
-- which anyone may call for a cell they may update (like llm.row_history, it answers to the caller's
-- rights); the worker's role reads them (status, plan).
REVOKE ALL ON FUNCTION llm.acting_role(), llm.mark_edited(), llm.edited_cells(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.release_cell(regclass, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION llm.release_cell(regclass, jsonb, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION llm.edited_cells(text) TO pgllm_worker;
GRANT SELECT ON llm.edited_cell TO pgllm_worker;
