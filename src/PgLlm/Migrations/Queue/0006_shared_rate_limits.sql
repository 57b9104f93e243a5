-- PgLlm queue, step 6: rate limits shared by every worker of the database.
-- One token bucket per endpoint and kind ('requests', 'tokens'), refilled at per_minute / 60 a second up to
-- `burst`. Workers take slices of it (llm.endpoint_take): a grant counts as spent at once, so in any window of
-- T seconds the bucket grants at most burst + per_minute * T / 60, whichever worker asks. A 429 the endpoint
-- answers pauses it for every worker (llm.endpoint_pause: endpoint_state.paused_until, notified on
-- pgllm_endpoints); while paused nothing is granted. Each worker asks once per slice, not per call, and only
-- when a limit is configured.

ALTER TABLE llm.endpoint_state ADD COLUMN IF NOT EXISTS paused_until timestamptz;

CREATE TABLE IF NOT EXISTS llm.endpoint_bucket (
    endpoint          text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('requests', 'tokens')),
    per_minute        integer NOT NULL CHECK (per_minute > 0),
    burst             integer NOT NULL CHECK (burst > 0),
    level             double precision NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- What was granted (and settled) in the current minute and the one before it, for `pgllm status`.
    window_start      timestamptz NOT NULL DEFAULT clock_timestamp(),
    window_granted    bigint NOT NULL DEFAULT 0,
    previous_granted  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, kind)
);

-- Grants up to p_wanted permits (partial grants: whatever the bucket holds) after settling p_debt (what calls
-- used beyond what they reserved; negative: what they reserved and did not use). A new bucket starts empty.
-- Returns the grant and how long until min(what is still wanted, burst) permits are there (while the endpoint
-- is paused: until the pause ends, and nothing is granted).
CREATE OR REPLACE FUNCTION llm.endpoint_take(p_endpoint text, p_kind text, p_wanted integer, p_per_minute integer,
                                             p_burst integer, p_debt bigint DEFAULT 0,
                                             OUT granted integer, OUT wait_seconds double precision)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_row llm.endpoint_bucket;
    v_now timestamptz;
    v_rate double precision := p_per_minute / 60.0;
    v_level double precision;
    v_paused double precision;
    v_need double precision;
    v_minutes double precision;
BEGIN
    IF p_kind NOT IN ('requests', 'tokens') OR p_wanted < 0 OR p_per_minute < 1 OR p_burst < 1 THEN
        RAISE EXCEPTION 'llm.endpoint_take: bad arguments (kind %, wanted %, per minute %, burst %)', p_kind, p_wanted, p_per_minute, p_burst
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO llm.endpoint_bucket AS b (endpoint, kind, per_minute, burst) VALUES (p_endpoint, p_kind, p_per_minute, p_burst)
    ON CONFLICT (endpoint, kind) DO NOTHING;
    SELECT * INTO v_row FROM llm.endpoint_bucket AS b WHERE b.endpoint = p_endpoint AND b.kind = p_kind FOR UPDATE;
    -- The clock after the lock: a taker that waited for it refills only for the time since the last take.
    v_now := clock_timestamp();
    v_level := least(p_burst::double precision,
                     v_row.level + v_rate * greatest(0, extract(epoch FROM v_now - v_row.updated_at)) - coalesce(p_debt, 0));
    SELECT greatest(0, extract(epoch FROM s.paused_until - v_now)) INTO v_paused
      FROM llm.endpoint_state AS s WHERE s.endpoint = p_endpoint;
    IF coalesce(v_paused, 0) > 0 THEN
        granted := 0;
        wait_seconds := v_paused;
    ELSE
        granted := least(p_wanted, greatest(0, floor(v_level)))::integer;
        v_level := v_level - granted;
        v_need := least(p_wanted - granted, p_burst);
        wait_seconds := CASE WHEN v_need <= 0 THEN 0 ELSE greatest(0, (v_need - v_level) / v_rate) END;
    END IF;
    v_minutes := floor(extract(epoch FROM v_now - v_row.window_start) / 60);
    UPDATE llm.endpoint_bucket AS b
       SET per_minute = p_per_minute, burst = p_burst, level = v_level, updated_at = v_now,
           window_start = CASE WHEN v_minutes >= 1 THEN b.window_start + make_interval(mins => v_minutes::integer) ELSE b.window_start END,
           previous_granted = CASE WHEN v_minutes = 1 THEN b.window_granted WHEN v_minutes > 1 THEN 0 ELSE b.previous_granted END,
           window_granted = CASE WHEN v_minutes >= 1 THEN 0 ELSE b.window_granted END + granted + coalesce(p_debt, 0)
     WHERE b.endpoint = p_endpoint AND b.kind = p_kind;
END
$fn$;

-- The endpoint answered 429 (a rate limit, not out of quota): every worker pauses its calls for p_seconds
-- (a longer pause already set holds). Returns when the pause ends.
CREATE OR REPLACE FUNCTION llm.endpoint_pause(p_endpoint text, p_seconds double precision)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_until timestamptz := clock_timestamp() + make_interval(secs => greatest(0, p_seconds));
    v_changed boolean;
BEGIN
    INSERT INTO llm.endpoint_state AS s (endpoint) VALUES (p_endpoint) ON CONFLICT (endpoint) DO NOTHING;
    UPDATE llm.endpoint_state AS s SET paused_until = v_until
     WHERE s.endpoint = p_endpoint AND (s.paused_until IS NULL OR s.paused_until < v_until)
    RETURNING true INTO v_changed;
    IF v_changed THEN
        PERFORM pg_notify('pgllm_endpoints', p_endpoint);
    END IF;
    RETURN (SELECT s.paused_until FROM llm.endpoint_state AS s WHERE s.endpoint = p_endpoint);
END
$fn$;

-- What each bucket granted in about the last minute (the current minute, plus the part of the previous one
-- that the last 60 seconds still cover), with its configured limit: for `pgllm status` and `pgllm endpoint list`.
CREATE OR REPLACE VIEW llm.endpoint_bucket_use AS
SELECT b.endpoint, b.kind, b.per_minute, b.burst,
       greatest(0, round(CASE WHEN e.seconds < 60 THEN b.window_granted + b.previous_granted * (1 - e.seconds / 60)
                              WHEN e.seconds < 120 THEN b.window_granted * (2 - e.seconds / 60)
                              ELSE 0 END))::bigint AS used_last_minute
  FROM llm.endpoint_bucket AS b
 CROSS JOIN LATERAL (SELECT extract(epoch FROM clock_timestamp() - b.window_start)::double precision AS seconds) AS e;

REVOKE ALL ON llm.endpoint_bucket, llm.endpoint_bucket_use FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.endpoint_take(text, text, integer, integer, integer, bigint),
                       llm.endpoint_pause(text, double precision)
   FROM PUBLIC;
GRANT SELECT ON llm.endpoint_bucket, llm.endpoint_bucket_use TO pgllm_worker;
GRANT EXECUTE ON FUNCTION llm.endpoint_take(text, text, integer, integer, integer, bigint),
                          llm.endpoint_pause(text, double precision)
   TO pgllm_worker;
