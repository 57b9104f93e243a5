-- PgLlm queue, step 5: the endpoint governor's state, shared by every worker of the database.
-- One row per model endpoint ('default' for the unnamed one): 'closed' (calls flow), 'open' (the circuit
-- breaker opened on sustained transport failures or 5xx: the endpoint's jobs wait, one worker at a time
-- probes it with one job, with exponential backoff), or 'stopped' (401/403 or out of quota: its jobs wait
-- until `pgllm endpoint resume NAME`, llm.endpoint_resume, or a worker starts with a changed configuration).
-- Jobs that wait spend no attempt. Workers read the table every second or so; nothing here is on a
-- claim's path.

CREATE TABLE IF NOT EXISTS llm.endpoint_state (
    endpoint          text PRIMARY KEY,
    state             text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'stopped')),
    reason            text,
    since             timestamptz NOT NULL DEFAULT now(),
    failures          integer NOT NULL DEFAULT 0,
    first_failure_at  timestamptz,
    failed_probes     integer NOT NULL DEFAULT 0,
    next_probe_at     timestamptz,
    probe_by          text,
    probe_until       timestamptz,
    config_hash       text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- A worker starts: makes the endpoint's row, and a changed configuration (base URL, key, model) ends a
-- stop or an open breaker, since the new one may work. Returns the state.
CREATE OR REPLACE FUNCTION llm.endpoint_configure(p_endpoint text, p_config_hash text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_row llm.endpoint_state;
BEGIN
    INSERT INTO llm.endpoint_state AS s (endpoint, config_hash) VALUES (p_endpoint, p_config_hash)
    ON CONFLICT (endpoint) DO NOTHING;
    SELECT * INTO v_row FROM llm.endpoint_state AS s WHERE s.endpoint = p_endpoint FOR UPDATE;
    IF v_row.config_hash IS DISTINCT FROM p_config_hash THEN
        UPDATE llm.endpoint_state AS s
           SET config_hash = p_config_hash,
               state = 'closed',
               reason = CASE WHEN v_row.state <> 'closed' THEN 'resumed: configuration changed' ELSE s.reason END,
               since = CASE WHEN v_row.state <> 'closed' THEN now() ELSE s.since END,
               failures = 0, first_failure_at = NULL, failed_probes = 0, next_probe_at = NULL,
               probe_by = NULL, probe_until = NULL, updated_at = now()
         WHERE s.endpoint = p_endpoint;
        IF v_row.state <> 'closed' THEN
            PERFORM pg_notify('pgllm_endpoints', p_endpoint);
        END IF;
        RETURN 'closed';
    END IF;
    RETURN v_row.state;
END
$fn$;

-- A call failed because of its endpoint. p_kind 'stop' (401/403, out of quota) stops it at once;
-- 'outage' (unreachable, timeout, 5xx) counts a consecutive failure: p_threshold of them within
-- p_window_seconds open the breaker. A failed probe (the caller holds the probe lease) doubles the wait
-- before the next one (from p_probe_seconds up to p_max_probe_seconds). Returns the state after it.
CREATE OR REPLACE FUNCTION llm.endpoint_failure(p_endpoint text, p_kind text, p_reason text, p_config_hash text, p_worker text,
                                                p_threshold integer, p_window_seconds double precision,
                                                p_probe_seconds double precision, p_max_probe_seconds double precision)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_row llm.endpoint_state;
    v_failures integer;
BEGIN
    IF p_kind NOT IN ('stop', 'outage') THEN
        RAISE EXCEPTION 'llm.endpoint_failure: unknown kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO llm.endpoint_state AS s (endpoint, config_hash) VALUES (p_endpoint, p_config_hash)
    ON CONFLICT (endpoint) DO NOTHING;
    SELECT * INTO v_row FROM llm.endpoint_state AS s WHERE s.endpoint = p_endpoint FOR UPDATE;
    IF v_row.state = 'stopped' THEN
        RETURN 'stopped';
    END IF;
    IF p_kind = 'stop' THEN
        UPDATE llm.endpoint_state AS s
           SET state = 'stopped', reason = p_reason, since = now(), config_hash = p_config_hash,
               next_probe_at = NULL, probe_by = NULL, probe_until = NULL, updated_at = now()
         WHERE s.endpoint = p_endpoint;
        PERFORM pg_notify('pgllm_endpoints', p_endpoint);
        RETURN 'stopped';
    END IF;
    IF v_row.state = 'open' THEN
        IF v_row.probe_by = p_worker THEN
            UPDATE llm.endpoint_state AS s
               SET failed_probes = s.failed_probes + 1, reason = p_reason,
                   next_probe_at = now() + make_interval(secs => least(p_max_probe_seconds, p_probe_seconds * power(2, s.failed_probes + 1))),
                   probe_by = NULL, probe_until = NULL, failures = s.failures + 1, updated_at = now()
             WHERE s.endpoint = p_endpoint;
        END IF;
        RETURN 'open';
    END IF;
    v_failures := CASE WHEN v_row.first_failure_at IS NULL OR v_row.failures = 0
                         OR v_row.first_failure_at < now() - make_interval(secs => p_window_seconds)
                       THEN 1 ELSE v_row.failures + 1 END;
    IF v_failures >= p_threshold THEN
        UPDATE llm.endpoint_state AS s
           SET state = 'open', reason = p_reason, since = now(), failures = v_failures, failed_probes = 0,
               next_probe_at = now() + make_interval(secs => p_probe_seconds),
               probe_by = NULL, probe_until = NULL, updated_at = now()
         WHERE s.endpoint = p_endpoint;
        PERFORM pg_notify('pgllm_endpoints', p_endpoint);
        RETURN 'open';
    END IF;
    UPDATE llm.endpoint_state AS s
       SET failures = v_failures,
           first_failure_at = CASE WHEN v_failures = 1 THEN now() ELSE s.first_failure_at END,
           updated_at = now()
     WHERE s.endpoint = p_endpoint;
    RETURN 'closed';
END
$fn$;

-- A call succeeded after failures were counted, or while the breaker was open (the probe, or a call that
-- was in flight): the breaker closes and the count starts again. A stop is not ended by it.
CREATE OR REPLACE FUNCTION llm.endpoint_success(p_endpoint text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_state text;
BEGIN
    UPDATE llm.endpoint_state AS s
       SET state = 'closed',
           reason = CASE WHEN s.state = 'open' THEN 'closed: a call succeeded' ELSE s.reason END,
           since = CASE WHEN s.state = 'open' THEN now() ELSE s.since END,
           failures = 0, first_failure_at = NULL, failed_probes = 0, next_probe_at = NULL,
           probe_by = NULL, probe_until = NULL, updated_at = now()
     WHERE s.endpoint = p_endpoint AND s.state <> 'stopped'
    RETURNING 'closed' INTO v_state;
    IF v_state IS NOT NULL THEN
        PERFORM pg_notify('pgllm_endpoints', p_endpoint);
    END IF;
    RETURN coalesce(v_state, (SELECT s.state FROM llm.endpoint_state AS s WHERE s.endpoint = p_endpoint), 'closed');
END
$fn$;

-- Takes the probe lease of an open endpoint whose next probe is due: one worker at a time sends one job.
-- The lease lasts p_lease_seconds, so a worker that dies while probing holds up the next probe no longer.
CREATE OR REPLACE FUNCTION llm.endpoint_probe(p_endpoint text, p_worker text, p_lease_seconds double precision)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE llm.endpoint_state AS s
       SET probe_by = p_worker, probe_until = now() + make_interval(secs => p_lease_seconds), updated_at = now()
     WHERE s.endpoint = p_endpoint
       AND s.state = 'open'
       AND coalesce(s.next_probe_at, now()) <= now()
       AND (s.probe_by IS NULL OR s.probe_until < now())
    RETURNING true;
$fn$;

-- Gives the probe lease back unused (the worker found no job to probe with).
CREATE OR REPLACE FUNCTION llm.endpoint_probe_unused(p_endpoint text, p_worker text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE llm.endpoint_state AS s
       SET probe_by = NULL, probe_until = NULL, updated_at = now()
     WHERE s.endpoint = p_endpoint AND s.probe_by = p_worker;
$fn$;

-- Ends a stop (or an open breaker) by hand: `pgllm endpoint resume NAME`. Returns the state it left.
CREATE OR REPLACE FUNCTION llm.endpoint_resume(p_endpoint text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_state text;
BEGIN
    SELECT s.state INTO v_state FROM llm.endpoint_state AS s WHERE s.endpoint = p_endpoint FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE llm.endpoint_state AS s
       SET state = 'closed', reason = CASE WHEN v_state <> 'closed' THEN 'resumed by hand' ELSE s.reason END,
           since = CASE WHEN v_state <> 'closed' THEN now() ELSE s.since END,
           failures = 0, first_failure_at = NULL, failed_probes = 0, next_probe_at = NULL,
           probe_by = NULL, probe_until = NULL, updated_at = now()
     WHERE s.endpoint = p_endpoint;
    PERFORM pg_notify('pgllm_endpoints', p_endpoint);
    RETURN v_state;
END
$fn$;

REVOKE ALL ON llm.endpoint_state FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.endpoint_configure(text, text),
                       llm.endpoint_failure(text, text, text, text, text, integer, double precision, double precision, double precision),
                       llm.endpoint_success(text),
                       llm.endpoint_probe(text, text, double precision),
                       llm.endpoint_probe_unused(text, text),
                       llm.endpoint_resume(text)
   FROM PUBLIC;
GRANT SELECT ON llm.endpoint_state TO pgllm_worker;
GRANT EXECUTE ON FUNCTION llm.endpoint_configure(text, text),
                          llm.endpoint_failure(text, text, text, text, text, integer, double precision, double precision, double precision),
                          llm.endpoint_success(text),
                          llm.endpoint_probe(text, text, double precision),
                          llm.endpoint_probe_unused(text, text),
                          llm.endpoint_resume(text)
   TO pgllm_worker;
