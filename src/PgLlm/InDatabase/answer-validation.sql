-- PgLlm in-database worker: checks a model's answer against the task's JSON schema and converts it
-- for the write-back, by the rules of the .NET worker's AnswerValidator (src/PgLlm/Completions):
-- every target column present; types, enums (exact, then trimmed and case-insensitive), minimum and
-- maximum, string formats (date, date-time, time, uuid), null only where the schema allows it (a target
-- answered null without AllowNull says so), arrays item by item and nested objects property by property
-- (every property required, extra keys dropped).
-- A mismatch names the field and the value, e.g. expected integer for "stars", got "four", with the
-- same words as the .NET worker (tests/PgLlm.InDatabase.Tests/Data/answer-cases.json runs the same
-- cases through both). The answer is handled as json, not jsonb: key order and number text are kept.
-- Part of the in-database worker's script (appended to 0002-pgllm-in-database.sql).

-- A JSON value's compact text, keys in their order, numbers as written (the .NET worker's ToJsonString).
CREATE OR REPLACE FUNCTION llm.answer_json_text(p_value json)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    CASE json_typeof(p_value)
        WHEN 'object' THEN
            RETURN '{' || coalesce((SELECT string_agg(to_json(e.key)::text || ':' || llm.answer_json_text(e.value), ',' ORDER BY e.n)
                                      FROM json_each(p_value) WITH ORDINALITY AS e(key, value, n)), '') || '}';
        WHEN 'array' THEN
            RETURN '[' || coalesce((SELECT string_agg(llm.answer_json_text(e.value), ',' ORDER BY e.n)
                                      FROM json_array_elements(p_value) WITH ORDINALITY AS e(value, n)), '') || ']';
        WHEN 'string' THEN
            RETURN to_json(p_value #>> '{}')::text;
        ELSE
            RETURN btrim(p_value::text, E' \t\r\n');
    END CASE;
END
$fn$;

-- The first 200 characters of a text, with "..." when cut.
CREATE OR REPLACE FUNCTION llm.answer_excerpt(p_text text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE WHEN length(p_text) <= 200 THEN p_text ELSE left(p_text, 200) || '...' END;
$fn$;

-- "expected <what> for "<path>", got <value>": the mismatch message, raised with SQLSTATE PGLV1.
CREATE OR REPLACE FUNCTION llm.answer_mismatch(p_expected text, p_path text, p_value json)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_shown text;
BEGIN
    v_shown := CASE WHEN p_value IS NULL OR json_typeof(p_value) = 'null' THEN 'null'
                    WHEN json_typeof(p_value) = 'object' THEN 'an object ' || llm.answer_excerpt(llm.answer_json_text(p_value))
                    WHEN json_typeof(p_value) = 'array' THEN 'an array ' || llm.answer_excerpt(llm.answer_json_text(p_value))
                    ELSE llm.answer_excerpt(llm.answer_json_text(p_value)) END;
    RAISE EXCEPTION 'expected % for "%", got %', p_expected, p_path, v_shown USING ERRCODE = 'PGLV1';
END
$fn$;

-- The string values of a schema's enum, quoted and listed: "a", "b".
CREATE OR REPLACE FUNCTION llm.answer_enum_list(p_values json)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(string_agg('"' || (e.value #>> '{}') || '"', ', ' ORDER BY e.n), '')
      FROM json_array_elements(p_values) WITH ORDINALITY AS e(value, n)
     WHERE json_typeof(e.value) = 'string';
$fn$;

-- A string of the schema's format (date, date-time, time, uuid; any other format is not checked).
CREATE OR REPLACE FUNCTION llm.answer_string(p_text text, p_format text, p_path text)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ok boolean := true;
    v_parts text[];
BEGIN
    IF p_format = 'date' THEN
        v_ok := p_text ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' AND substr(p_text, 1, 4) <> '0000';
    ELSIF p_format = 'date-time' THEN
        v_parts := regexp_match(p_text, '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]([0-9]{2}):([0-9]{2})(:([0-9]{2})(\.[0-9]+)?)?([Zz]|[+-]([0-9]{2}):?([0-9]{2}))$');
        -- An offset of at most 14 hours, as .NET's DateTimeOffset allows.
        v_ok := v_parts IS NOT NULL AND substr(p_text, 1, 4) <> '0000' AND v_parts[1]::int < 24 AND v_parts[2]::int < 60
                AND coalesce(v_parts[4]::int, 0) < 60 AND coalesce(v_parts[8]::int, 0) < 60
                AND coalesce(v_parts[7]::int * 60 + v_parts[8]::int, 0) <= 14 * 60;
    ELSIF p_format = 'time' THEN
        -- What .NET's TimeOnly.TryParse takes: h:m[:s[.fraction]] and an optional AM/PM, or h AM/PM.
        v_parts := regexp_match(p_text, '^\s*([0-9]{1,2})(:([0-9]{1,2})(:([0-9]{1,2})(\.[0-9]*)?)?)?\s*([AaPp][Mm])?\s*$');
        v_ok := v_parts IS NOT NULL AND (v_parts[2] IS NOT NULL OR v_parts[7] IS NOT NULL)
                AND v_parts[1]::int < 24 AND coalesce(v_parts[3]::int, 0) < 60 AND coalesce(v_parts[5]::int, 0) < 60;
    ELSIF p_format = 'uuid' THEN
        -- What .NET's Guid.TryParse takes: 32 digits, with hyphens, in braces or parentheses, or the
        -- {0x...,{0x...}} form; surrounding whitespace ignored.
        v_ok := regexp_replace(p_text, '\s', '', 'g') ~* '^\{0x[0-9a-f]{1,8},0x[0-9a-f]{1,4},0x[0-9a-f]{1,4},\{(0x[0-9a-f]{1,2},){7}0x[0-9a-f]{1,2}\}\}$'
             OR btrim(p_text, E' \t\r\n\f\v') ~ '^([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}|\([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\))$';
    END IF;
    IF v_ok AND p_format IN ('date', 'date-time') THEN
        BEGIN
            -- A real calendar day (no 2024-02-30).
            PERFORM make_date(substr(p_text, 1, 4)::int, substr(p_text, 6, 2)::int, substr(p_text, 9, 2)::int);
        EXCEPTION WHEN OTHERS THEN
            v_ok := false;
        END;
    END IF;
    IF NOT v_ok THEN
        PERFORM llm.answer_mismatch(CASE p_format WHEN 'date' THEN 'a date (yyyy-mm-dd)'
                                                  WHEN 'date-time' THEN 'a date-time with an offset (RFC 3339, e.g. 2024-05-01T12:00:00Z)'
                                                  WHEN 'time' THEN 'a time (hh:mm:ss)'
                                                  ELSE 'a ' || p_format END,
                                    p_path, to_json(p_text));
    END IF;
    RETURN to_jsonb(p_text);
END
$fn$;

-- minimum and maximum (from [Range]) hold for the exact value; the value is returned unchanged.
CREATE OR REPLACE FUNCTION llm.answer_in_range(p_value json, p_schema json, p_type text, p_path text)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_min text := CASE WHEN json_typeof(p_schema -> 'minimum') = 'number' THEN btrim((p_schema -> 'minimum')::text) END;
    v_max text := CASE WHEN json_typeof(p_schema -> 'maximum') = 'number' THEN btrim((p_schema -> 'maximum')::text) END;
    v_number numeric := btrim(p_value::text)::numeric;
BEGIN
    IF v_min IS NOT NULL OR v_max IS NOT NULL THEN
        -- Beyond a .NET decimal (about 7.9e28) the .NET worker cannot compare, and rejects the value.
        IF abs(v_number) >= 79228162514264337593543950336 OR (v_min IS NOT NULL AND v_number < v_min::numeric)
           OR (v_max IS NOT NULL AND v_number > v_max::numeric) THEN
            PERFORM llm.answer_mismatch(format('%s from %s to %s', p_type, coalesce(v_min::numeric::text, 'any'), coalesce(v_max::numeric::text, 'any')),
                                        p_path, p_value);
        END IF;
    END IF;
    RETURN p_value::jsonb;
END
$fn$;

-- A whole number (4, 4.0 and 4e0 are the integer 4) that fits 64 bits, then its range.
CREATE OR REPLACE FUNCTION llm.answer_integer(p_value json, p_schema json, p_path text)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_number numeric := btrim(p_value::text)::numeric;
BEGIN
    IF v_number <> trunc(v_number) OR v_number < -9223372036854775808 OR v_number > 9223372036854775807 THEN
        PERFORM llm.answer_mismatch('integer', p_path, p_value);
    END IF;
    RETURN llm.answer_in_range(to_json(v_number::bigint), p_schema, 'integer', p_path);
END
$fn$;

-- One of the enum's strings: the exact one, else the one equal ignoring case and surrounding spaces.
CREATE OR REPLACE FUNCTION llm.answer_enum(p_value json, p_values json, p_path text)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_text text := CASE WHEN json_typeof(p_value) = 'string' THEN p_value #>> '{}' END;
    v_match text;
BEGIN
    IF v_text IS NOT NULL THEN
        SELECT a.v INTO v_match
          FROM (SELECT e.value #>> '{}' AS v, e.n FROM json_array_elements(p_values) WITH ORDINALITY AS e(value, n)
                 WHERE json_typeof(e.value) = 'string') AS a
         WHERE a.v = v_text OR lower(a.v) = lower(btrim(v_text, E' \t\r\n'))
         ORDER BY (a.v = v_text) DESC, a.n
         LIMIT 1;
        IF FOUND THEN
            RETURN to_jsonb(v_match);
        END IF;
    END IF;
    PERFORM llm.answer_mismatch('one of ' || llm.answer_enum_list(p_values), p_path, p_value);
    RETURN NULL;
END
$fn$;

-- An object with every property the schema lists (extra keys dropped), each converted.
CREATE OR REPLACE FUNCTION llm.answer_object(p_value json, p_schema json, p_path text, p_depth integer)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_property record;
    v_result jsonb := '{}'::jsonb;
BEGIN
    IF json_typeof(p_schema -> 'properties') IS DISTINCT FROM 'object' THEN
        RETURN p_value::jsonb;
    END IF;
    FOR v_property IN SELECT e.key, e.value FROM json_each(p_schema -> 'properties') WITH ORDINALITY AS e(key, value, n) ORDER BY e.n LOOP
        IF p_value -> v_property.key IS NULL THEN
            RAISE EXCEPTION 'expected "%" in "%", which has only %', v_property.key, p_path,
                  coalesce((SELECT string_agg('"' || k.key || '"', ', ' ORDER BY k.n)
                              FROM json_object_keys(p_value) WITH ORDINALITY AS k(key, n)), 'no keys')
                  USING ERRCODE = 'PGLV1';
        END IF;
        v_result := v_result || jsonb_build_object(v_property.key,
                        llm.answer_value(p_value -> v_property.key, v_property.value, p_path || '.' || v_property.key, p_depth + 1));
    END LOOP;
    RETURN v_result;
END
$fn$;

-- An array, each item converted by the schema's items.
CREATE OR REPLACE FUNCTION llm.answer_array(p_value json, p_schema json, p_path text, p_depth integer)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_item record;
    v_result jsonb := '[]'::jsonb;
BEGIN
    IF json_typeof(p_schema -> 'items') IS DISTINCT FROM 'object' THEN
        RETURN p_value::jsonb;
    END IF;
    FOR v_item IN SELECT e.value, e.n FROM json_array_elements(p_value) WITH ORDINALITY AS e(value, n) ORDER BY e.n LOOP
        v_result := v_result || jsonb_build_array(llm.answer_value(v_item.value, p_schema -> 'items', format('%s[%s]', p_path, v_item.n - 1), p_depth + 1));
    END LOOP;
    RETURN v_result;
END
$fn$;

-- One value against its schema: null where allowed, an enum's member, else the first of the
-- schema's types the value's JSON kind matches. A schema without a type accepts anything.
CREATE OR REPLACE FUNCTION llm.answer_value(p_value json, p_schema json, p_path text, p_depth integer)
RETURNS jsonb
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_types text[];
    v_type text;
    v_kind text := json_typeof(p_value);
    v_nullable boolean;
    v_has_enum boolean := json_typeof(p_schema -> 'enum') = 'array';
BEGIN
    IF p_depth > 32 OR json_typeof(p_schema) IS DISTINCT FROM 'object' THEN
        RETURN p_value::jsonb;
    END IF;
    v_types := CASE json_typeof(p_schema -> 'type')
                    WHEN 'string' THEN ARRAY[p_schema ->> 'type']
                    WHEN 'array' THEN ARRAY(SELECT t.value #>> '{}' FROM json_array_elements(p_schema -> 'type') WITH ORDINALITY AS t(value, n)
                                             WHERE json_typeof(t.value) = 'string' ORDER BY t.n)
                    ELSE ARRAY[]::text[] END;
    v_nullable := 'null' = ANY (v_types)
               OR (v_has_enum AND EXISTS (SELECT 1 FROM json_array_elements(p_schema -> 'enum') AS e WHERE json_typeof(e) = 'null'));
    v_types := array_remove(v_types, 'null');
    IF v_kind = 'null' THEN
        IF v_nullable OR cardinality(v_types) = 0 THEN
            RETURN 'null'::jsonb;
        END IF;
        -- A target may be null only when its task says so (the generator's schema allows null only then).
        IF p_depth = 0 THEN
            RAISE EXCEPTION '"%" is null, and the task does not allow null (AllowNull)', p_path USING ERRCODE = 'PGLV1';
        END IF;
        PERFORM llm.answer_mismatch(CASE WHEN v_has_enum THEN 'one of ' || llm.answer_enum_list(p_schema -> 'enum')
                                         ELSE array_to_string(v_types, ' or ') END, p_path, NULL);
    END IF;
    IF v_has_enum THEN
        RETURN llm.answer_enum(p_value, p_schema -> 'enum', p_path);
    END IF;
    FOREACH v_type IN ARRAY v_types LOOP
        CASE
            WHEN v_type = 'string' AND v_kind = 'string' THEN RETURN llm.answer_string(p_value #>> '{}', p_schema ->> 'format', p_path);
            WHEN v_type = 'integer' AND v_kind = 'number' THEN RETURN llm.answer_integer(p_value, p_schema, p_path);
            WHEN v_type = 'number' AND v_kind = 'number' THEN RETURN llm.answer_in_range(p_value, p_schema, 'number', p_path);
            WHEN v_type = 'boolean' AND v_kind = 'boolean' THEN RETURN p_value::jsonb;
            WHEN v_type = 'array' AND v_kind = 'array' THEN RETURN llm.answer_array(p_value, p_schema, p_path, p_depth);
            WHEN v_type = 'object' AND v_kind = 'object' THEN RETURN llm.answer_object(p_value, p_schema, p_path, p_depth);
            ELSE NULL;
        END CASE;
    END LOOP;
    IF cardinality(v_types) = 0 THEN
        RETURN p_value::jsonb;
    END IF;
    PERFORM llm.answer_mismatch(array_to_string(v_types, ' or '), p_path, p_value);
    RETURN NULL;
END
$fn$;

-- The answer text checked against the task's schema: answer holds exactly the target columns,
-- converted, or problem says what is wrong (without the "invalid answer: " prefix).
CREATE OR REPLACE FUNCTION llm.check_answer(p_schema json, p_target_columns text[], p_text text, OUT answer jsonb, OUT problem text)
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_answer json;
    v_column text;
    v_result jsonb := '{}'::jsonb;
BEGIN
    IF p_text IS NULL OR btrim(p_text, E' \t\r\n\f\v') = '' THEN
        problem := 'the model returned an empty answer';
        RETURN;
    END IF;
    BEGIN
        v_answer := p_text::json;
    EXCEPTION WHEN OTHERS THEN
        problem := format('the answer is not valid JSON (%s): %s', SQLERRM, llm.answer_excerpt(p_text));
        RETURN;
    END;
    IF json_typeof(v_answer) <> 'object' THEN
        problem := 'the answer is not a JSON object: ' || llm.answer_excerpt(p_text);
        RETURN;
    END IF;
    BEGIN
        FOREACH v_column IN ARRAY p_target_columns LOOP
            IF v_answer -> v_column IS NULL THEN
                problem := format('the answer has no "%s": %s', v_column, llm.answer_excerpt(p_text));
                RETURN;
            END IF;
            v_result := v_result || jsonb_build_object(v_column,
                            CASE WHEN json_typeof(p_schema -> 'properties' -> v_column) IS NULL THEN (v_answer -> v_column)::jsonb
                                 ELSE llm.answer_value(v_answer -> v_column, p_schema -> 'properties' -> v_column, v_column, 0) END);
        END LOOP;
    EXCEPTION
        WHEN SQLSTATE 'PGLV1' THEN
            problem := SQLERRM;
            RETURN;
        -- A value PostgreSQL cannot hold (a \u0000 in a string): the .NET worker's write-back fails the same way.
        WHEN data_exception THEN
            problem := format('the answer does not fit the columns: %s (%s)', SQLERRM, SQLSTATE);
            RETURN;
    END;
    answer := v_result;
END
$fn$;
