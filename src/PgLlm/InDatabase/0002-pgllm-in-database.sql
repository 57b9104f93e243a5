-- PgLlm in-database worker (opt-in): drains llm.job from inside PostgreSQL with the `http`
-- extension (pgsql-http 1.7 API), under the same rules as the .NET worker: claims through llm.claim
-- (attempt counted at claim), reads inputs through each task's generated :inputs function, writes
-- through its :write_back function (stale-write protection), fails through llm.fail (transient,
-- invalid, permanent; backoff with jitter, never sooner than Retry-After).
-- llm.run_worker commits between steps: the model is called in a transaction of its own that
-- holds no lock on llm.job or on any user row. Secrets live only in llm.worker_settings, set with
-- llm.configure(...), readable by its owner alone.
-- Idempotent: re-applied as a whole whenever its content changes.
-- Answers are checked against the task's JSON schema (answer-validation.sql) and stored errors are
-- redacted (secret-redaction.sql) by the .NET worker's rules; both files are appended to this script.

DO $pgllm$
BEGIN
    IF to_regclass('llm.job') IS NULL THEN
        RAISE EXCEPTION 'PgLlm''s in-database worker needs the PgLlm core schema (llm.job): apply the core script first';
    END IF;
    IF NOT EXISTS (SELECT 1
                     FROM pg_catalog.pg_proc AS p
                     JOIN pg_catalog.pg_type AS a ON a.oid = p.proargtypes[0]
                     JOIN pg_catalog.pg_type AS r ON r.oid = p.prorettype
                    WHERE p.proname = 'http' AND p.pronargs = 1
                      AND a.typname = 'http_request' AND r.typname = 'http_response') THEN
        RAISE EXCEPTION 'PgLlm''s in-database worker needs the PostgreSQL extension "http" (pgsql-http 1.7 or later), which is not installed in database %', current_database()
              USING ERRCODE = 'undefined_function',
                    HINT = 'Run CREATE EXTENSION http; (or leave the in-database worker off and run the .NET worker).';
    END IF;
END
$pgllm$;

-- The endpoint, key, model and timings. One row; only its owner (the migrating role) can read it:
-- grant SELECT to the role that runs the worker if that is another role.
CREATE TABLE IF NOT EXISTS llm.worker_settings (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    base_url           text NOT NULL CHECK (base_url ~ '^https?://'),
    api_key            text,
    model              text NOT NULL CHECK (model <> ''),
    timeout_seconds    double precision NOT NULL DEFAULT 120 CHECK (timeout_seconds > 0),
    lease_seconds      double precision NOT NULL DEFAULT 300,
    retry_base_seconds double precision NOT NULL DEFAULT 2 CHECK (retry_base_seconds >= 0),
    retry_max_seconds  double precision NOT NULL DEFAULT 600 CHECK (retry_max_seconds >= 0),
    run_seconds        double precision NOT NULL DEFAULT 55 CHECK (run_seconds > 0),
    idle_poll_seconds  double precision NOT NULL DEFAULT 0.5 CHECK (idle_poll_seconds > 0),
    retention          interval DEFAULT '7 days',
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- A lease shorter than a call would let another worker run the same job meanwhile.
    CONSTRAINT worker_settings_lease_check CHECK (lease_seconds > timeout_seconds)
);
REVOKE ALL ON TABLE llm.worker_settings FROM PUBLIC;
-- The endpoint governor's settings (PgLlm:Governor in the .NET worker): the in-database worker reports to
-- llm.endpoint_state as the endpoint 'in-database', so a stop or an open breaker holds for its runs too.
ALTER TABLE llm.worker_settings
    ADD COLUMN IF NOT EXISTS governor               boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS failure_threshold      integer NOT NULL DEFAULT 5 CHECK (failure_threshold >= 1),
    ADD COLUMN IF NOT EXISTS failure_window_seconds double precision NOT NULL DEFAULT 30 CHECK (failure_window_seconds > 0),
    ADD COLUMN IF NOT EXISTS probe_seconds          double precision NOT NULL DEFAULT 2 CHECK (probe_seconds > 0),
    ADD COLUMN IF NOT EXISTS max_probe_seconds      double precision NOT NULL DEFAULT 3 CHECK (max_probe_seconds > 0);

-- Sets the endpoint, key and model (and optionally timings). Call it with bind parameters from a
-- client so that the key never appears in a statement's text (pg_stat_activity, server logs).
-- Omitted or NULL timings keep their current value.
CREATE OR REPLACE FUNCTION llm.configure(
    p_base_url text,
    p_api_key text,
    p_model text,
    p_timeout_seconds double precision DEFAULT NULL,
    p_lease_seconds double precision DEFAULT NULL,
    p_retry_base_seconds double precision DEFAULT NULL,
    p_retry_max_seconds double precision DEFAULT NULL,
    p_run_seconds double precision DEFAULT NULL,
    p_idle_poll_seconds double precision DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_base_url IS NULL OR p_base_url !~ '^https?://' THEN
        RAISE EXCEPTION 'llm.configure: the base URL must be an absolute http(s) URL such as https://api.openai.com/v1; got %', coalesce(p_base_url, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_model IS NULL OR p_model = '' THEN
        RAISE EXCEPTION 'llm.configure: a model name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO llm.worker_settings AS s (id, base_url, api_key, model, timeout_seconds, lease_seconds,
                                          retry_base_seconds, retry_max_seconds, run_seconds, idle_poll_seconds)
    VALUES (true, p_base_url, p_api_key, p_model,
            coalesce(p_timeout_seconds, 120), coalesce(p_lease_seconds, greatest(300, coalesce(p_timeout_seconds, 120) + 60)),
            coalesce(p_retry_base_seconds, 2), coalesce(p_retry_max_seconds, 600),
            coalesce(p_run_seconds, 55), coalesce(p_idle_poll_seconds, 0.5))
    ON CONFLICT (id) DO UPDATE
       SET base_url = EXCLUDED.base_url,
           api_key = EXCLUDED.api_key,
           model = EXCLUDED.model,
           timeout_seconds = coalesce(p_timeout_seconds, s.timeout_seconds),
           lease_seconds = coalesce(p_lease_seconds, greatest(s.lease_seconds, coalesce(p_timeout_seconds, s.timeout_seconds) + 60)),
           retry_base_seconds = coalesce(p_retry_base_seconds, s.retry_base_seconds),
           retry_max_seconds = coalesce(p_retry_max_seconds, s.retry_max_seconds),
           run_seconds = coalesce(p_run_seconds, s.run_seconds),
           idle_poll_seconds = coalesce(p_idle_poll_seconds, s.idle_poll_seconds),
           updated_at = now();
END
$fn$;
REVOKE ALL ON FUNCTION llm.configure(text, text, text, double precision, double precision, double precision, double precision, double precision, double precision) FROM PUBLIC;

-- Renders a prompt template with a job's inputs by the rules of PgLlm.Templates: {name} is a
-- placeholder, {{ and }} are literal braces, any other brace is malformed. Single pass: a value is
-- inserted verbatim and never scanned again. Strings insert their text, null or missing values
-- nothing, other JSON values their JSON text.
CREATE OR REPLACE FUNCTION llm.render_prompt(p_template text, p_inputs jsonb)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_token text;
    v_value jsonb;
    v_parts text[] := ARRAY[]::text[];
BEGIN
    FOR v_token IN
        SELECT t.m[1]
          FROM regexp_matches(p_template, '(\{\{|\}\}|\{[^{}]*\}|[^{}]+|[{}])', 'g') WITH ORDINALITY AS t(m, n)
         ORDER BY t.n
    LOOP
        IF v_token = '{{' THEN
            v_parts := v_parts || '{'::text;
        ELSIF v_token = '}}' THEN
            v_parts := v_parts || '}'::text;
        ELSIF v_token = '{' THEN
            RAISE EXCEPTION 'malformed prompt template: a ''{'' is never closed; write ''{{'' for a literal brace'
                  USING ERRCODE = 'invalid_parameter_value';
        ELSIF v_token = '}' THEN
            RAISE EXCEPTION 'malformed prompt template: a ''}'' closes no placeholder; write ''}}'' for a literal brace'
                  USING ERRCODE = 'invalid_parameter_value';
        ELSIF left(v_token, 1) = '{' THEN
            IF btrim(substr(v_token, 2, length(v_token) - 2)) = '' THEN
                RAISE EXCEPTION 'malformed prompt template: an empty placeholder ''{}'''
                      USING ERRCODE = 'invalid_parameter_value';
            END IF;
            v_value := p_inputs -> substr(v_token, 2, length(v_token) - 2);
            IF v_value IS NULL OR jsonb_typeof(v_value) = 'null' THEN
                CONTINUE;
            ELSIF jsonb_typeof(v_value) = 'string' THEN
                v_parts := v_parts || (v_value #>> '{}');
            ELSE
                v_parts := v_parts || v_value::text;
            END IF;
        ELSE
            v_parts := v_parts || v_token;
        END IF;
    END LOOP;
    RETURN array_to_string(v_parts, '');
END
$fn$;

-- Exponential backoff with jitter (between half and all of base * 2^(attempt-1), capped), never
-- sooner than the endpoint's Retry-After: the .NET worker's rule.
CREATE OR REPLACE FUNCTION llm.retry_delay(p_attempt integer, p_retry_after double precision, p_base double precision, p_max double precision)
RETURNS double precision
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT greatest(d.capped / 2 + random() * d.capped / 2, coalesce(p_retry_after, 0))
      FROM (SELECT least(p_base * power(2::double precision, greatest(p_attempt - 1, 0)), p_max) AS capped) AS d;
$fn$;

-- Records a failed attempt through llm.fail, the .NET worker's way: the API key and anything shaped
-- like a token redacted from the message (secret-redaction.sql), a permanent failure at once, others
-- after llm.retry_delay (never sooner than the endpoint's Retry-After). When the model answered (an
-- invalid answer, one that did not fit the columns), its usage (tokens, model) counts in the job's.
-- The signature before the answer record (no usage) is replaced by this one.
DROP FUNCTION IF EXISTS llm.worker_fail(bigint, integer, text, text, double precision);
CREATE OR REPLACE FUNCTION llm.worker_fail(p_job_id bigint, p_attempt integer, p_message text, p_kind text, p_retry_after double precision DEFAULT NULL,
                                           p_input_tokens integer DEFAULT NULL, p_output_tokens integer DEFAULT NULL, p_model text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_settings llm.worker_settings;
BEGIN
    SELECT * INTO STRICT v_settings FROM llm.worker_settings;
    RETURN llm.fail(p_job_id, p_attempt, llm.redact_secrets(p_message, v_settings.api_key),
                    CASE WHEN p_kind = 'permanent' THEN 0
                         ELSE llm.retry_delay(p_attempt, p_retry_after, v_settings.retry_base_seconds, v_settings.retry_max_seconds) END,
                    p_kind, p_input_tokens, p_output_tokens, p_model, false);
END
$fn$;

-- The .NET worker's table check, in short: a task whose table is gone, or lacks a column the task keys on,
-- reads or fills, can only fail after a paid call, so its jobs fail at once as permanent, with no call. (The
-- .NET check also compares the targets' types with the answers; `pgllm migrate` runs it and prints the DDL.)
-- One catalog lookup per job: nothing next to an HTTP call. NULL when the table is as the task expects.
CREATE OR REPLACE FUNCTION llm.table_problem(p_task llm.task)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH t AS (
        SELECT p_task.table_schema || '.' || p_task.table_name AS label,
               to_regclass(format('%I.%I', p_task.table_schema, p_task.table_name)) AS relation,
               split_part(p_task.name, ':', 2) AS task
    ), wanted AS (
        SELECT c.name, min(c.role) AS role
          FROM (SELECT unnest(p_task.key_columns) AS name, 1 AS role
                UNION ALL SELECT unnest(p_task.read_columns), 2
                UNION ALL SELECT unnest(p_task.target_columns), 3) AS c
         GROUP BY c.name
    )
    SELECT CASE WHEN t.relation IS NULL THEN t.label || ': table is missing (dropped or renamed since it was migrated?)'
           ELSE (SELECT string_agg(format('%s: column %s (%s) is missing', t.label, w.name,
                                          CASE w.role WHEN 1 THEN 'key' WHEN 2 THEN 'read by task ' || t.task
                                                      ELSE 'target of task ' || t.task END), '; ' ORDER BY w.role, w.name)
                        || '; `pgllm migrate` prints the DDL that fixes it'
                   FROM wanted AS w
                  WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                                     WHERE a.attrelid = t.relation AND a.attname = w.name AND a.attnum > 0 AND NOT a.attisdropped)) END
      FROM t;
$fn$;

-- The SQLSTATEs of a statement that met a table unlike the one it was written for (the .NET worker's
-- TableGate.IsSchemaError): an undefined column or table, a type mismatch.
CREATE OR REPLACE FUNCTION llm.is_schema_error(p_sqlstate text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT p_sqlstate IN ('42703', '42P01', '42804');
$fn$;

-- The first line of an error response's message (an OpenAI-style error.message, else the body's start),
-- as the .NET worker keeps it.
CREATE OR REPLACE FUNCTION llm.error_detail(p_content text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_message text;
BEGIN
    BEGIN
        v_message := p_content::jsonb #>> '{error,message}';
    EXCEPTION WHEN OTHERS THEN
        v_message := NULL;
    END;
    RETURN split_part(translate(coalesce(v_message, left(coalesce(p_content, ''), 200)), E'\r', E'\n'), E'\n', 1);
END
$fn$;

-- Whether a failed call is its endpoint's fault, by the .NET worker's rule (FailureClassifier.EndpointFaultOf):
-- 'stop' for 401/403 and a 429 that speaks of quota or billing, 'outage' for an unreachable endpoint, a
-- timeout, 408, 502, 503, 504 and 529 (a plain 500 is left to the job: a poison request must not hold up the
-- endpoint); NULL otherwise. reason is what llm.endpoint_state shows (not yet redacted).
CREATE OR REPLACE FUNCTION llm.endpoint_fault(p_status integer, p_content text, p_error text, OUT kind text, OUT reason text)
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_detail text := format('HTTP %s: %s', p_status, llm.error_detail(p_content));
BEGIN
    IF p_error IS NOT NULL THEN
        kind := 'outage';
        reason := p_error;
    ELSIF p_status IN (401, 403) THEN
        kind := 'stop';
        reason := 'unauthorized: ' || v_detail;
    ELSIF p_status = 429 AND (p_content ILIKE '%insufficient_quota%' OR p_content ILIKE '%quota_exceeded%'
                              OR p_content ILIKE '%billing%' OR p_content ILIKE '%exceeded your current quota%') THEN
        kind := 'stop';
        reason := 'quota exceeded: ' || v_detail;
    ELSIF p_status IN (408, 502, 503, 504, 529) THEN
        kind := 'outage';
        reason := v_detail;
    END IF;
END
$fn$;

-- The in-database worker's endpoint in llm.endpoint_state, and a hash of its configuration as the .NET
-- worker makes it (base URL, key, model): a changed configuration ends a stop.
CREATE OR REPLACE FUNCTION llm.worker_endpoint(OUT endpoint text, OUT config_hash text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT 'in-database',
           encode(sha256(convert_to(s.base_url || E'\n' || coalesce(s.api_key, '') || E'\n' || s.model, 'UTF8')), 'hex')
      FROM llm.worker_settings AS s;
$fn$;

-- Before each claim: 'claim' (calls flow, or the governor is off), 'probe' (the breaker is open and this
-- worker holds the probe lease: one job tests the endpoint), 'wait' (open, another worker probes or the
-- probe is not due) or 'stopped' (401/403 or out of quota: jobs wait for llm.endpoint_resume('in-database')).
CREATE OR REPLACE FUNCTION llm.worker_gate(p_worker text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_settings llm.worker_settings;
    v_state text;
BEGIN
    SELECT * INTO STRICT v_settings FROM llm.worker_settings;
    IF NOT v_settings.governor THEN
        RETURN 'claim';
    END IF;
    SELECT s.state INTO v_state FROM llm.endpoint_state AS s WHERE s.endpoint = (SELECT e.endpoint FROM llm.worker_endpoint() AS e);
    IF v_state IS NULL OR v_state = 'closed' THEN
        RETURN 'claim';
    ELSIF v_state = 'stopped' THEN
        RETURN 'stopped';
    ELSIF llm.endpoint_probe('in-database', p_worker, v_settings.lease_seconds) THEN
        RETURN 'probe';
    END IF;
    RETURN 'wait';
END
$fn$;

-- After a call: reports it to the governor. A failure that is the endpoint's (llm.endpoint_fault) stops it or
-- counts toward its breaker; when the endpoint is then stopped or open, the job is given back without
-- spending its attempt (true). A success, or a probe the endpoint answered, closes a breaker that counted
-- failures. False: settle the job as usual (llm.worker_finish).
CREATE OR REPLACE FUNCTION llm.worker_report(p_worker text, p_job_id bigint, p_attempt integer, p_probe boolean,
                                             p_status integer, p_content text, p_error text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_settings llm.worker_settings;
    v_endpoint record;
    v_fault record;
    v_state text;
BEGIN
    SELECT * INTO STRICT v_settings FROM llm.worker_settings;
    IF NOT v_settings.governor THEN
        RETURN false;
    END IF;
    SELECT * INTO v_endpoint FROM llm.worker_endpoint();
    SELECT * INTO v_fault FROM llm.endpoint_fault(p_status, p_content, p_error);
    IF v_fault.kind IS NULL THEN
        IF p_probe OR EXISTS (SELECT 1 FROM llm.endpoint_state AS s WHERE s.endpoint = v_endpoint.endpoint AND (s.failures > 0 OR s.state = 'open')) THEN
            PERFORM llm.endpoint_success(v_endpoint.endpoint);
        END IF;
        RETURN false;
    END IF;
    v_state := llm.endpoint_failure(v_endpoint.endpoint, v_fault.kind, llm.redact_secrets(v_fault.reason, v_settings.api_key),
                                    v_endpoint.config_hash, p_worker, v_settings.failure_threshold,
                                    v_settings.failure_window_seconds, v_settings.probe_seconds, v_settings.max_probe_seconds);
    IF v_state = 'closed' THEN
        RETURN false;
    END IF;
    PERFORM llm.release(p_job_id, p_attempt);
    RETURN true;
END
$fn$;

-- Step 1 of a job, in its own transaction: claims one job, reads its row through the task's
-- :inputs function and renders the request. status is 'idle' (nothing due), 'settled' (skipped or
-- failed without a call: row gone, task removed, inputs unreadable; or given back unspent to wait for
-- a chain's upstream, llm.hold_for_upstreams) or 'ready' (body holds the request).
CREATE OR REPLACE FUNCTION llm.worker_claim(
    p_worker text,
    OUT status text,
    OUT job_id bigint,
    OUT attempt integer,
    OUT task text,
    OUT inputs_hash text,
    OUT body json)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_settings llm.worker_settings;
    v_job record;
    v_task llm.task;
    v_extra jsonb;
    v_inputs jsonb;
    v_prompt text;
    v_messages json;
    v_problem text;
BEGIN
    SELECT * INTO STRICT v_settings FROM llm.worker_settings;
    SELECT c.id, c.task, c.attempt INTO v_job FROM llm.claim(p_worker, 1, v_settings.lease_seconds) AS c;
    IF NOT FOUND THEN
        status := 'idle';
        RETURN;
    END IF;
    job_id := v_job.id;
    attempt := v_job.attempt;
    task := v_job.task;
    status := 'settled';

    SELECT * INTO v_task FROM llm.task AS t WHERE t.name = v_job.task;
    IF NOT FOUND THEN
        PERFORM llm.skip(v_job.id, v_job.attempt, format('task ''%s'' is not in llm.task (removed from the declarations?)', v_job.task));
        RETURN;
    END IF;

    v_problem := llm.table_problem(v_task);
    IF v_problem IS NOT NULL THEN
        PERFORM llm.worker_fail(v_job.id, v_job.attempt, v_problem, 'permanent');
        RETURN;
    END IF;

    -- A chain's downstream job whose upstream has yet to settle goes back to the queue, unspent and uncalled.
    IF cardinality(v_task.after) > 0
       AND cardinality(llm.hold_for_upstreams(v_task.name, ARRAY[v_job.id], ARRAY[v_job.attempt])) > 0 THEN
        RETURN;
    END IF;

    BEGIN
        EXECUTE format('SELECT i.inputs, i.inputs_hash FROM %s($1) AS i', v_task.inputs_function)
           INTO v_inputs, inputs_hash
          USING ARRAY[v_job.id];
    EXCEPTION WHEN OTHERS THEN
        PERFORM llm.worker_fail(v_job.id, v_job.attempt, 'could not read the row: ' || SQLERRM,
                                CASE WHEN llm.is_schema_error(SQLSTATE) THEN 'permanent' ELSE 'transient' END);
        RETURN;
    END;
    IF v_inputs IS NULL THEN
        PERFORM llm.skip(v_job.id, v_job.attempt, 'the row no longer exists, or an input the prompt needs is null');
        RETURN;
    END IF;

    BEGIN
        v_prompt := llm.render_prompt(v_task.prompt, v_inputs);
    EXCEPTION WHEN invalid_parameter_value THEN
        PERFORM llm.worker_fail(v_job.id, v_job.attempt, SQLERRM, 'permanent');
        RETURN;
    END;

    v_messages := CASE WHEN v_task.system_prompt IS NULL
                       THEN json_build_array(json_build_object('role', 'user', 'content', v_prompt))
                       ELSE json_build_array(json_build_object('role', 'system', 'content', v_task.system_prompt),
                                             json_build_object('role', 'user', 'content', v_prompt)) END;
    -- json (not jsonb) keeps the schema's property order, which models answer in.
    body := json_build_object(
        'model', coalesce(v_task.model, v_settings.model),
        'messages', v_messages,
        'response_format', json_build_object(
            'type', 'json_schema',
            'json_schema', json_build_object('name', 'result', 'schema', v_task.json_schema, 'strict', true)));
    -- Per-task sampling options, when the registry has them (columns added by later core versions).
    v_extra := jsonb_strip_nulls(jsonb_build_object(
        'temperature', to_jsonb(v_task) -> 'temperature',
        'max_completion_tokens', coalesce(to_jsonb(v_task) -> 'max_output_tokens', to_jsonb(v_task) -> 'max_tokens')));
    IF v_extra <> '{}'::jsonb THEN
        -- Appended as text: a round trip through jsonb would reorder the schema's keys.
        body := (left(body::text, -1) || ', ' || substr(v_extra::text, 2))::json;
    END IF;
    status := 'ready';
END
$fn$;

-- Step 2 of a job, in a transaction of its own that holds no lock on the queue or a user row:
-- the HTTP call, with the timeout set for this transaction only. A failure to reach the endpoint
-- (timeout, refused connection) comes back as error, not as an exception.
CREATE OR REPLACE FUNCTION llm.worker_call(
    p_body json,
    OUT status integer,
    OUT content text,
    OUT retry_after double precision,
    OUT error text)
LANGUAGE plpgsql
-- The schema holding the http extension is added to this search_path below.
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_settings llm.worker_settings;
    v_response record;
    v_value text;
BEGIN
    SELECT * INTO STRICT v_settings FROM llm.worker_settings;
    -- Local to this transaction: never changes the session's setting.
    PERFORM set_config('http.timeout_msec', round(v_settings.timeout_seconds * 1000)::bigint::text, true);
    BEGIN
        SELECT r.status, r.content, r.headers INTO v_response
          FROM http((
                 'POST',
                 rtrim(v_settings.base_url, '/') || '/chat/completions',
                 CASE WHEN coalesce(v_settings.api_key, '') = '' THEN ARRAY[]::http_header[]
                      ELSE ARRAY[http_header('Authorization', 'Bearer ' || v_settings.api_key)] END,
                 'application/json',
                 p_body::text)::http_request) AS r;
    EXCEPTION WHEN OTHERS THEN
        error := CASE WHEN SQLERRM ILIKE '%timed out%' OR SQLERRM ILIKE '%timeout%'
                      THEN format('timeout: the model did not answer within %s s (%s)', v_settings.timeout_seconds, SQLERRM)
                      ELSE 'model endpoint unreachable: ' || SQLERRM END;
        RETURN;
    END;
    status := v_response.status;
    content := v_response.content;

    -- retry-after-ms, then Retry-After (seconds or an HTTP date).
    SELECT h.value INTO v_value FROM unnest(v_response.headers) AS h WHERE lower(h.field) = 'retry-after-ms' LIMIT 1;
    IF v_value ~ '^\s*[0-9]+(\.[0-9]+)?\s*$' THEN
        retry_after := v_value::double precision / 1000;
        RETURN;
    END IF;
    SELECT h.value INTO v_value FROM unnest(v_response.headers) AS h WHERE lower(h.field) = 'retry-after' LIMIT 1;
    IF v_value ~ '^\s*[0-9]+(\.[0-9]+)?\s*$' THEN
        retry_after := v_value::double precision;
    ELSIF v_value IS NOT NULL THEN
        BEGIN
            retry_after := greatest(extract(epoch FROM v_value::timestamptz - now()), 0);
        EXCEPTION WHEN OTHERS THEN
            retry_after := NULL;
        END;
    END IF;
END
$fn$;

-- Step 3 of a job, in its own short transaction: classifies the outcome like the .NET worker and
-- either writes the answer through the task's :write_back function or records the failure through
-- llm.fail. Returns the job's new state ('lost' when another worker took the job over).
CREATE OR REPLACE FUNCTION llm.worker_finish(
    p_job_id bigint,
    p_attempt integer,
    p_task text,
    p_inputs_hash text,
    p_status integer,
    p_content text,
    p_retry_after double precision,
    p_error text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_settings llm.worker_settings;
    v_task llm.task;
    v_response jsonb;
    v_result jsonb;
    v_message text;
    v_kind text;
    v_retry_after double precision;
    v_state text;
    v_input integer;
    v_output integer;
    v_model text;
BEGIN
    SELECT * INTO STRICT v_settings FROM llm.worker_settings;
    SELECT * INTO v_task FROM llm.task AS t WHERE t.name = p_task;
    IF NOT FOUND THEN
        RETURN llm.skip(p_job_id, p_attempt, format('task ''%s'' was removed while the model was answering', p_task));
    END IF;

    IF p_error IS NOT NULL THEN
        v_kind := 'transient';
        v_message := p_error;
    ELSIF p_status IN (408, 429) OR p_status >= 500 THEN
        v_kind := 'transient';
        v_retry_after := p_retry_after;
    ELSIF p_status NOT BETWEEN 200 AND 299 THEN
        v_kind := 'permanent';
    END IF;
    IF v_kind IS NOT NULL AND v_message IS NULL THEN
        v_message := format('model endpoint returned HTTP %s: %s', p_status, llm.error_detail(p_content));
    END IF;

    IF v_kind IS NULL THEN
        BEGIN
            v_response := p_content::jsonb;
        EXCEPTION WHEN OTHERS THEN
            v_kind := 'transient';
            v_message := 'the endpoint''s response is not a chat completion: ' || left(coalesce(p_content, ''), 200);
        END;
    END IF;

    IF v_kind IS NULL THEN
        -- What the call cost and who answered (the model the endpoint names, else the one asked): counted in
        -- the job's whether or not the answer is written.
        v_input := (v_response #>> '{usage,prompt_tokens}')::integer;
        v_output := (v_response #>> '{usage,completion_tokens}')::integer;
        v_model := coalesce(v_response ->> 'model', v_task.model, v_settings.model);
        -- The task's JSON schema, checked and converted by the .NET worker's rules (answer-validation.sql).
        SELECT c.answer, c.problem INTO v_result, v_message
          FROM llm.check_answer(v_task.json_schema, v_task.target_columns, v_response #>> '{choices,0,message,content}') AS c;
        IF v_message IS NOT NULL THEN
            v_kind := 'invalid';
            v_message := 'invalid answer: ' || v_message;
        END IF;
    END IF;

    IF v_kind IS NULL THEN
        BEGIN
            -- The task's write-back function takes a batch: this answer as a batch of one, with the model
            -- that gave it (the job keeps the answer and model; the answer cache is the .NET worker's).
            EXECUTE llm.write_back_call(v_task.complete_function, true)
               INTO v_state
              USING ARRAY[p_job_id], ARRAY[p_attempt], ARRAY[p_inputs_hash], ARRAY[v_result], ARRAY[v_input], ARRAY[v_output],
                    ARRAY[v_model], ARRAY[false];
            RETURN v_state;
        EXCEPTION
            -- The answer does not fit the columns (type, length, CHECK, NOT NULL...): an invalid answer.
            WHEN data_exception OR integrity_constraint_violation THEN
                v_kind := 'invalid';
                v_message := format('the answer does not fit the columns: %s (%s)', SQLERRM, SQLSTATE);
            -- The table changed while the model answered: no later call could be written either.
            WHEN OTHERS THEN
                v_kind := CASE WHEN llm.is_schema_error(SQLSTATE) THEN 'permanent' ELSE 'transient' END;
                v_message := CASE WHEN v_kind = 'permanent' THEN 'the table no longer fits the task: ' ELSE 'database error: ' END
                             || SQLERRM || ' (' || SQLSTATE || ')';
        END;
    END IF;

    RETURN llm.worker_fail(p_job_id, p_attempt, v_message, v_kind, v_retry_after, v_input, v_output, v_model);
END
$fn$;

-- The worker: claims and runs one job at a time until p_run_seconds (default: the configured
-- run_seconds, 55) have passed, polling every idle_poll_seconds when the queue is empty. pg_cron
-- calls it every minute, so a job is picked up within about a second even though pg_cron's shortest
-- schedule is one minute. Commits between steps (so it must be CALLed outside a transaction
-- block, as pg_cron does); no transaction spans more than one job's HTTP call. p_stop_when_idle
-- ends the run as soon as nothing is pending or running. p_jobs returns the number of model calls.
-- No SET clause: a procedure with one cannot commit; everything it calls pins its own search_path.
CREATE OR REPLACE PROCEDURE llm.run_worker(
    p_run_seconds double precision DEFAULT NULL,
    p_stop_when_idle boolean DEFAULT false,
    INOUT p_jobs integer DEFAULT NULL)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_settings llm.worker_settings;
    v_worker text;
    v_deadline timestamptz;
    v_next_maintenance timestamptz := pg_catalog.clock_timestamp();
    v_job record;
    v_call record;
    v_wait double precision;
    v_next_due double precision;
    v_gate text;
BEGIN
    p_jobs := 0;
    SELECT * INTO v_settings FROM llm.worker_settings;
    IF NOT FOUND THEN
        RAISE WARNING 'PgLlm in-database worker: not configured; call llm.configure(base_url, api_key, model) first';
        RETURN;
    END IF;
    v_worker := 'in-database:' || pg_catalog.pg_backend_pid() || ':' || pg_catalog.left(pg_catalog.md5(pg_catalog.random()::text), 8);
    v_deadline := pg_catalog.clock_timestamp()
                + pg_catalog.make_interval(secs => coalesce(p_run_seconds, v_settings.run_seconds));
    IF v_settings.governor THEN
        -- A changed base URL, key or model ends a stop, as when a .NET worker starts with a new configuration.
        PERFORM llm.endpoint_configure(e.endpoint, e.config_hash) FROM llm.worker_endpoint() AS e;
    END IF;
    COMMIT;

    WHILE pg_catalog.clock_timestamp() < v_deadline LOOP
        IF pg_catalog.clock_timestamp() >= v_next_maintenance THEN
            PERFORM llm.rescue();
            IF v_settings.retention IS NOT NULL THEN
                PERFORM llm.prune(v_settings.retention);
            END IF;
            COMMIT;
            v_next_maintenance := pg_catalog.clock_timestamp() + interval '30 seconds';
        END IF;

        v_gate := llm.worker_gate(v_worker);
        COMMIT;
        IF v_gate = 'stopped' THEN
            RAISE WARNING 'PgLlm in-database worker: endpoint in-database is stopped (%); its jobs wait for llm.endpoint_resume(''in-database'')',
                (SELECT s.reason FROM llm.endpoint_state AS s WHERE s.endpoint = 'in-database');
            EXIT;
        ELSIF v_gate = 'wait' THEN
            -- The breaker is open: the jobs wait, spending nothing, until a probe (this worker's or another's) closes it.
            PERFORM pg_catalog.pg_sleep(LEAST(v_settings.idle_poll_seconds,
                                              GREATEST(EXTRACT(epoch FROM v_deadline - pg_catalog.clock_timestamp())::double precision, 0)));
            COMMIT;
            CONTINUE;
        END IF;

        SELECT * INTO v_job FROM llm.worker_claim(v_worker);
        COMMIT;

        IF v_gate = 'probe' AND v_job.status <> 'ready' THEN
            PERFORM llm.endpoint_probe_unused('in-database', v_worker);
            COMMIT;
        END IF;

        IF v_job.status = 'idle' THEN
            SELECT EXTRACT(epoch FROM pg_catalog.min(j.scheduled_at) - pg_catalog.now())::double precision
              INTO v_next_due
              FROM llm.job AS j WHERE j.state = 'pending';
            IF p_stop_when_idle AND v_next_due IS NULL
               AND NOT EXISTS (SELECT 1 FROM llm.job AS j WHERE j.state = 'running') THEN
                COMMIT;
                EXIT;
            END IF;
            SELECT * INTO v_settings FROM llm.worker_settings;
            v_wait := LEAST(v_settings.idle_poll_seconds,
                            GREATEST(coalesce(v_next_due, v_settings.idle_poll_seconds), 0.01),
                            GREATEST(EXTRACT(epoch FROM v_deadline - pg_catalog.clock_timestamp())::double precision, 0));
            COMMIT;
            PERFORM pg_catalog.pg_sleep(v_wait);
            COMMIT;
            CONTINUE;
        ELSIF v_job.status <> 'ready' THEN
            CONTINUE;
        END IF;

        SELECT * INTO v_call FROM llm.worker_call(v_job.body);
        COMMIT;
        p_jobs := p_jobs + 1;

        IF llm.worker_report(v_worker, v_job.job_id, v_job.attempt, v_gate = 'probe', v_call.status, v_call.content, v_call.error) THEN
            -- The endpoint's fault, and it is now stopped or open: the job went back without spending its attempt.
            COMMIT;
            CONTINUE;
        END IF;
        COMMIT;

        PERFORM llm.worker_finish(v_job.job_id, v_job.attempt, v_job.task, v_job.inputs_hash,
                                  v_call.status, v_call.content, v_call.retry_after, v_call.error);
        COMMIT;
    END LOOP;
END
$fn$;

REVOKE ALL ON FUNCTION llm.worker_fail(bigint, integer, text, text, double precision, integer, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.worker_claim(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.worker_gate(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.worker_report(text, bigint, integer, boolean, integer, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.worker_endpoint() FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.worker_call(json) FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.worker_finish(bigint, integer, text, text, integer, text, double precision, text) FROM PUBLIC;
REVOKE ALL ON PROCEDURE llm.run_worker(double precision, boolean, integer) FROM PUBLIC;

-- llm.worker_call finds http(http_request), http_header(...) and the types in the schema the
-- http extension lives in (public, extensions, ...): pin that schema into its search_path.
DO $pgllm$
DECLARE
    v_schema text;
BEGIN
    SELECT n.nspname INTO v_schema
      FROM pg_catalog.pg_proc AS p
      JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace
      JOIN pg_catalog.pg_type AS a ON a.oid = p.proargtypes[0]
      JOIN pg_catalog.pg_type AS r ON r.oid = p.prorettype
      LEFT JOIN pg_catalog.pg_extension AS e ON e.extname = 'http' AND e.extnamespace = n.oid
     WHERE p.proname = 'http' AND p.pronargs = 1
       AND a.typname = 'http_request' AND r.typname = 'http_response'
     ORDER BY (e.oid IS NOT NULL) DESC, n.nspname
     LIMIT 1;
    EXECUTE format('ALTER FUNCTION llm.worker_call(json) SET search_path = pg_catalog, %I, pg_temp', v_schema);
END
$pgllm$;
