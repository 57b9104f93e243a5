-- PgLlm queue, step 7: daily budgets per task and per endpoint, shared by every worker of the database.
--   * llm.budget: a cap of tokens (input + output) and/or of estimated cost (llm.model_price) per UTC day, for a
--     task (scope 'task', the task's name) or an endpoint (scope 'endpoint': 'default' or a PgLlm:Endpoints name).
--     Set, raised and cleared at run time: llm.budget_set, llm.budget_clear (`pgllm budget ...`).
--   * At its cap a task or endpoint claims no more jobs: they stay pending, spend no attempt and fail nothing,
--     and drain by themselves at 00:00 UTC or once the cap is raised or cleared.
--   * Spend is kept per UTC day, task and endpoint in llm.budget_spend (a handful of rows a day), never summed
--     over the jobs: while any budget exists, each claim (llm.claim_budgeted) reserves an estimate for every job it
--     takes (the task's recent average per attempt) in llm.budget_reservation, and once the job's attempt is over
--     (it is no longer running at that attempt) the reservation is settled: the tokens and cost the attempt added
--     to the job (failed attempts included) move to llm.budget_spend, on the day of the claim. A claim is admitted
--     while spent + reserved is under the cap, and takes (for an endpoint) or keeps (of a task's jobs) only as
--     many jobs as the remainder affords at the average, so a cap is overshot by the estimate's error on the
--     attempts in flight when it is reached: about one job with steady usage.
--   * No budget, no cost: the worker claims with llm.claim as before and nothing here runs.

CREATE TABLE IF NOT EXISTS llm.budget (
    scope        text NOT NULL CHECK (scope IN ('task', 'endpoint')),
    name         text NOT NULL CHECK (name <> ''),
    daily_tokens bigint CHECK (daily_tokens >= 0),
    daily_cost   numeric CHECK (daily_cost >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name),
    CHECK (daily_tokens IS NOT NULL OR daily_cost IS NOT NULL)
);

COMMENT ON TABLE llm.budget IS 'Daily caps (UTC day) of tokens and/or estimated cost per task or endpoint; set with llm.budget_set, removed with llm.budget_clear.';

CREATE TABLE IF NOT EXISTS llm.budget_spend (
    day      date NOT NULL,
    task     text NOT NULL,
    endpoint text NOT NULL,
    tokens   bigint NOT NULL DEFAULT 0,
    cost     numeric NOT NULL DEFAULT 0,
    attempts bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, task, endpoint)
);

COMMENT ON TABLE llm.budget_spend IS 'Tokens and estimated cost settled per UTC day (of the claim), task and endpoint while budgets exist; kept 35 days.';

CREATE TABLE IF NOT EXISTS llm.budget_reservation (
    job_id        bigint PRIMARY KEY,
    attempt       integer NOT NULL,
    day           date NOT NULL,
    task          text NOT NULL,
    endpoint      text NOT NULL,
    tokens_before bigint NOT NULL,
    cost_before   numeric NOT NULL,
    est_tokens    bigint,
    est_cost      numeric
);

COMMENT ON TABLE llm.budget_reservation IS 'One row per claimed job attempt while budgets exist: its estimate counts against the caps until the attempt is settled into llm.budget_spend.';

-- The UTC day budgets count in.
CREATE FUNCTION llm.budget_day()
RETURNS date
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT (now() AT TIME ZONE 'UTC')::date;
$fn$;

-- The endpoint a task's jobs go to, as the workers route them: its model when that names an endpoint some worker
-- registered (llm.endpoint_state), or the part before the first '/', else 'default'. Used only for a running job
-- claimed without a reservation (claimed before the workers saw the first budget); a budgeted claim is told its
-- endpoint by the worker.
CREATE FUNCTION llm.budget_endpoint_of(p_task text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce((SELECT e.endpoint
                       FROM llm.task AS t
                       JOIN llm.endpoint_state AS e ON e.endpoint <> 'default'
                                                   AND (t.model = e.endpoint OR split_part(t.model, '/', 1) = e.endpoint)
                      WHERE t.name = p_task
                      ORDER BY t.model = e.endpoint DESC
                      LIMIT 1), 'default');
$fn$;

-- Settles the reservations whose attempt is over (the job is no longer running at that attempt: it succeeded,
-- failed, went back to pending, was superseded, rescued or pruned): what the attempt added to the job's tokens and
-- cost moves to llm.budget_spend. Running jobs claimed without a reservation (before the workers saw the first
-- budget) get one, so their attempt counts too. Returns the reservations settled.
CREATE FUNCTION llm.budget_settle()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n integer;
BEGIN
    -- One settlement at a time (two would lock the same rows in their own orders); a claim that finds one under
    -- way goes on without: the reservations it leaves count their estimates a little longer.
    IF NOT pg_try_advisory_xact_lock(hashtext('llm.budget_settle')) THEN
        RETURN 0;
    END IF;
    WITH done AS (
        DELETE FROM llm.budget_reservation AS r
         WHERE NOT EXISTS (SELECT 1 FROM llm.job AS j WHERE j.id = r.job_id AND j.state = 'running' AND j.attempt = r.attempt)
     RETURNING r.*)
    INSERT INTO llm.budget_spend AS s (day, task, endpoint, tokens, cost, attempts)
    SELECT d.day, d.task, d.endpoint,
           sum(greatest(coalesce(j.input_tokens, 0) + coalesce(j.output_tokens, 0) - d.tokens_before, 0)),
           sum(greatest(coalesce(j.estimated_cost, 0) - d.cost_before, 0)),
           count(*)
      FROM done AS d
      LEFT JOIN llm.job AS j ON j.id = d.job_id
     GROUP BY d.day, d.task, d.endpoint
    ON CONFLICT (day, task, endpoint) DO UPDATE
       SET tokens = s.tokens + excluded.tokens, cost = s.cost + excluded.cost, attempts = s.attempts + excluded.attempts;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- The running jobs are few (the workers' concurrency) and found by the index of jobs out of pending.
    INSERT INTO llm.budget_reservation (job_id, attempt, day, task, endpoint, tokens_before, cost_before)
    SELECT j.id, j.attempt, llm.budget_day(), j.task, llm.budget_endpoint_of(j.task),
           coalesce(j.input_tokens, 0) + coalesce(j.output_tokens, 0), coalesce(j.estimated_cost, 0)
      FROM llm.job AS j
     WHERE j.state = 'running'
       AND NOT EXISTS (SELECT 1 FROM llm.budget_reservation AS r WHERE r.job_id = j.id)
    ON CONFLICT (job_id) DO NOTHING;
    RETURN n;
END
$fn$;

-- What a scope has used on p_day: settled spend, and the estimates of the attempts still in flight.
CREATE FUNCTION llm.budget_usage(p_scope text, p_name text, p_day date,
                                 OUT spent_tokens bigint, OUT spent_cost numeric, OUT reserved_tokens bigint, OUT reserved_cost numeric)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT (SELECT coalesce(sum(s.tokens), 0)::bigint FROM llm.budget_spend AS s
             WHERE s.day = p_day AND CASE p_scope WHEN 'task' THEN s.task ELSE s.endpoint END = p_name),
           (SELECT coalesce(sum(s.cost), 0) FROM llm.budget_spend AS s
             WHERE s.day = p_day AND CASE p_scope WHEN 'task' THEN s.task ELSE s.endpoint END = p_name),
           (SELECT coalesce(sum(r.est_tokens), 0)::bigint FROM llm.budget_reservation AS r
             WHERE r.day = p_day AND CASE p_scope WHEN 'task' THEN r.task ELSE r.endpoint END = p_name),
           (SELECT coalesce(sum(r.est_cost), 0) FROM llm.budget_reservation AS r
             WHERE r.day = p_day AND CASE p_scope WHEN 'task' THEN r.task ELSE r.endpoint END = p_name);
$fn$;

-- A scope's average tokens and cost per settled attempt over its last seven days; NULLs when none is known.
CREATE FUNCTION llm.budget_average(p_scope text, p_name text, p_day date, OUT tokens numeric, OUT cost numeric)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT sum(s.tokens)::numeric / nullif(sum(s.attempts), 0), sum(s.cost) / nullif(sum(s.attempts), 0)
      FROM llm.budget_spend AS s
     WHERE s.day BETWEEN p_day - 7 AND p_day
       AND CASE p_scope WHEN 'task' THEN s.task ELSE s.endpoint END = p_name;
$fn$;

-- How many more jobs a budget admits now: 0 at its cap; otherwise what its remainder affords at the scope's
-- average per attempt (at least 1), or, no attempt of it settled yet, 1 while none is in flight (0 else).
CREATE FUNCTION llm.budget_room(p_budget llm.budget, p_day date)
RETURNS integer
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_used record;
    v_avg record;
    v_left_tokens numeric;
    v_left_cost numeric;
BEGIN
    SELECT * INTO v_used FROM llm.budget_usage(p_budget.scope, p_budget.name, p_day);
    v_left_tokens := p_budget.daily_tokens - v_used.spent_tokens - v_used.reserved_tokens;
    v_left_cost := p_budget.daily_cost - v_used.spent_cost - v_used.reserved_cost;
    IF v_left_tokens <= 0 OR v_left_cost <= 0 THEN
        RETURN 0;
    END IF;
    SELECT * INTO v_avg FROM llm.budget_average(p_budget.scope, p_budget.name, p_day);
    IF v_avg.tokens IS NULL THEN
        -- Nothing known to estimate with: one job at a time until an attempt is settled.
        RETURN CASE WHEN EXISTS (SELECT 1 FROM llm.budget_reservation AS r
                                  WHERE r.day = p_day AND CASE p_budget.scope WHEN 'task' THEN r.task ELSE r.endpoint END = p_budget.name)
                    THEN 0 ELSE 1 END;
    END IF;
    -- An average of zero (nothing spent per attempt) limits nothing: least() passes over the NULLs.
    RETURN greatest(1, least(ceil(v_left_tokens / nullif(v_avg.tokens, 0)), ceil(v_left_cost / nullif(v_avg.cost, 0)), 2147483647))::integer;
END
$fn$;

-- Gives back, unspent, the jobs a claim took of a task beyond its room (p_rooms, per task of p_trim): the jobs
-- claimed first are kept. They go back to pending through llm.release (their attempt not counted), scheduled now.
-- Returns the ids given back.
CREATE FUNCTION llm.budget_trim(p_ids bigint[], p_tasks text[], p_attempts integer[], p_trim text[], p_rooms integer[])
RETURNS bigint[]
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH extra AS (
        SELECT c.id, c.attempt
          FROM (SELECT c.*, row_number() OVER (PARTITION BY c.task ORDER BY c.n) AS k
                  FROM unnest(p_ids, p_tasks, p_attempts) WITH ORDINALITY AS c(id, task, attempt, n)) AS c
          JOIN unnest(p_trim, p_rooms) AS t(task, room) ON t.task = c.task
         WHERE c.k > t.room),
    released AS (SELECT e.id, llm.release(e.id, e.attempt) AS state FROM extra AS e)
    SELECT coalesce(array_agg(r.id), '{}') FROM released AS r;
$fn$;

-- llm.claim, for a worker while any budget exists (it passes the lane's endpoint): settles what is over, locks
-- the budgets the claim counts against (the endpoint's, and the tasks' it may take: budgeted claims of the same
-- scopes take turns, so two workers never both spend the same remainder), leaves out the tasks at their cap,
-- takes no more jobs than the endpoint's remainder affords (none at its cap), gives back (unspent) the jobs of a
-- task beyond what its remainder affords, and reserves an estimate for each job kept. Same result as llm.claim.
CREATE FUNCTION llm.claim_budgeted(p_worker text, p_limit integer, p_lease_seconds double precision,
                                   p_only text[], p_except text[], p_endpoint text)
RETURNS TABLE (id bigint, task text, row_key jsonb, attempt integer, max_attempts integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_day date := llm.budget_day();
    v_limit integer := p_limit;
    v_except text[] := p_except;
    v_budget llm.budget;
    v_room integer;
    v_trim text[] := '{}';
    v_rooms integer[] := '{}';
    v_released bigint[];
    v_ids bigint[];
    v_tasks text[];
    v_keys jsonb[];
    v_attempts integer[];
    v_max integer[];
BEGIN
    PERFORM llm.budget_settle();
    FOR v_budget IN
        SELECT b.* FROM llm.budget AS b
         WHERE (b.scope = 'endpoint' AND b.name = p_endpoint)
            OR (b.scope = 'task' AND (p_only IS NULL OR b.name = ANY (p_only)) AND (p_except IS NULL OR b.name <> ALL (p_except)))
         ORDER BY b.scope, b.name
           FOR UPDATE
    LOOP
        v_room := llm.budget_room(v_budget, v_day);
        IF v_budget.scope = 'endpoint' THEN
            v_limit := least(v_limit, v_room);
        ELSIF v_room = 0 THEN
            v_except := coalesce(v_except, '{}') || v_budget.name;
        ELSIF v_room < v_limit THEN
            -- Near its cap: the claim may take other tasks' jobs freely, but no more of this one than it affords.
            v_trim := v_trim || v_budget.name;
            v_rooms := v_rooms || v_room;
        END IF;
    END LOOP;
    IF v_limit <= 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(c.id), array_agg(c.task), array_agg(c.row_key), array_agg(c.attempt), array_agg(c.max_attempts)
      INTO v_ids, v_tasks, v_keys, v_attempts, v_max
      FROM llm.claim(p_worker, v_limit, p_lease_seconds, p_only, v_except) AS c;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    IF cardinality(v_trim) > 0 THEN
        v_released := llm.budget_trim(v_ids, v_tasks, v_attempts, v_trim, v_rooms);
        IF cardinality(v_released) > 0 THEN
            SELECT array_agg(c.id ORDER BY c.n), array_agg(c.task ORDER BY c.n), array_agg(c.row_key ORDER BY c.n),
                   array_agg(c.attempt ORDER BY c.n), array_agg(c.max_attempts ORDER BY c.n)
              INTO v_ids, v_tasks, v_keys, v_attempts, v_max
              FROM unnest(v_ids, v_tasks, v_keys, v_attempts, v_max) WITH ORDINALITY AS c(id, task, row_key, attempt, max_attempts, n)
             WHERE c.id <> ALL (v_released);
            IF v_ids IS NULL THEN
                RETURN;
            END IF;
        END IF;
    END IF;
    INSERT INTO llm.budget_reservation AS r (job_id, attempt, day, task, endpoint, tokens_before, cost_before, est_tokens, est_cost)
    SELECT j.id, j.attempt, v_day, j.task, p_endpoint,
           coalesce(j.input_tokens, 0) + coalesce(j.output_tokens, 0), coalesce(j.estimated_cost, 0),
           ceil(a.tokens)::bigint, round(a.cost, 10)
      FROM llm.job AS j
      LEFT JOIN LATERAL llm.budget_average('task', j.task, v_day) AS a ON true
     WHERE j.id = ANY (v_ids)
    ON CONFLICT (job_id) DO UPDATE
       SET attempt = excluded.attempt, day = excluded.day, task = excluded.task, endpoint = excluded.endpoint,
           tokens_before = excluded.tokens_before, cost_before = excluded.cost_before,
           est_tokens = excluded.est_tokens, est_cost = excluded.est_cost;
    RETURN QUERY SELECT * FROM unnest(v_ids, v_tasks, v_keys, v_attempts, v_max);
END
$fn$;

-- Every budget with today's use (settling first): spent, reserved (attempts in flight), and whether it waits at its
-- cap, with why. Read by the workers every refresh interval, by `pgllm budget list` and `pgllm status`.
CREATE FUNCTION llm.budget_state()
RETURNS TABLE (scope text, name text, daily_tokens bigint, daily_cost numeric, spent_tokens bigint, spent_cost numeric,
               reserved_tokens bigint, reserved_cost numeric, waiting boolean, reason text, day date)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_day date := llm.budget_day();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM llm.budget) THEN
        RETURN;
    END IF;
    PERFORM llm.budget_settle();
    DELETE FROM llm.budget_spend AS s WHERE s.day < v_day - 35;
    RETURN QUERY
    SELECT b.scope, b.name, b.daily_tokens, b.daily_cost, u.spent_tokens, u.spent_cost, u.reserved_tokens, u.reserved_cost,
           w.cost_reached OR w.tokens_reached,
           CASE WHEN w.cost_reached THEN format('daily cost cap %s reached', b.daily_cost)
                WHEN w.tokens_reached THEN format('daily token cap %s reached', b.daily_tokens) END,
           v_day
      FROM llm.budget AS b
     CROSS JOIN LATERAL llm.budget_usage(b.scope, b.name, v_day) AS u
     CROSS JOIN LATERAL (SELECT coalesce(u.spent_cost + u.reserved_cost >= b.daily_cost, false) AS cost_reached,
                                coalesce(u.spent_tokens + u.reserved_tokens >= b.daily_tokens, false) AS tokens_reached) AS w
     ORDER BY b.scope, b.name;
END
$fn$;

-- Sets (or raises, lowers) a budget: its caps replace the former ones; a NULL cap is none (one of the two must be
-- given). The first budget starts the count: today's spend so far is read once from the jobs finished today
-- (by the index of jobs out of pending). The workers are told at once (NOTIFY pgllm_budgets).
CREATE FUNCTION llm.budget_set(p_scope text, p_name text, p_daily_tokens bigint, p_daily_cost numeric)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_day date := llm.budget_day();
BEGIN
    IF p_scope IS NULL OR p_scope NOT IN ('task', 'endpoint') THEN
        RAISE EXCEPTION 'budget scope must be ''task'' or ''endpoint'', not %', coalesce(quote_literal(p_scope), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(p_name, '') = '' THEN
        RAISE EXCEPTION 'budget name is empty (a task''s name, or an endpoint''s: ''default'' or a PgLlm:Endpoints name)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_daily_tokens IS NULL AND p_daily_cost IS NULL THEN
        RAISE EXCEPTION 'budget % % has no cap: give daily tokens and/or daily cost (llm.budget_clear removes a budget)', p_scope, p_name USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_daily_tokens < 0 OR p_daily_cost < 0 THEN
        RAISE EXCEPTION 'budget % %: a daily cap cannot be negative', p_scope, p_name USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_scope = 'task' AND NOT EXISTS (SELECT 1 FROM llm.task AS t WHERE t.name = p_name) THEN
        RAISE EXCEPTION 'unknown task %', quote_literal(p_name) USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Known tasks: ' || coalesce((SELECT string_agg(t.name, ', ' ORDER BY t.name) FROM llm.task AS t), 'none');
    END IF;
    LOCK TABLE llm.budget IN SHARE ROW EXCLUSIVE MODE;
    IF NOT EXISTS (SELECT 1 FROM llm.budget) THEN
        -- No count ran while no budget existed: today's spend is read from the jobs finished today, once, and kept
        -- where it is more than what was counted before (which also has the tokens of failed attempts whose jobs
        -- wait for a retry). Reservations whose attempt ended meanwhile are in that read: dropped.
        DELETE FROM llm.budget_reservation AS r
         WHERE NOT EXISTS (SELECT 1 FROM llm.job AS j WHERE j.id = r.job_id AND j.state = 'running' AND j.attempt = r.attempt);
        INSERT INTO llm.budget_spend AS s (day, task, endpoint, tokens, cost, attempts)
        SELECT v_day, j.task, llm.budget_endpoint_of(j.task),
               sum(coalesce(j.input_tokens, 0) + coalesce(j.output_tokens, 0)), coalesce(sum(j.estimated_cost), 0), count(*)
          FROM llm.job AS j
         WHERE j.state IN ('succeeded', 'failed', 'superseded', 'skipped')
           AND j.finished_at >= (v_day::timestamp AT TIME ZONE 'UTC')
         GROUP BY j.task
        ON CONFLICT (day, task, endpoint) DO UPDATE
           SET tokens = greatest(s.tokens, excluded.tokens), cost = greatest(s.cost, excluded.cost),
               attempts = greatest(s.attempts, excluded.attempts);
    END IF;
    INSERT INTO llm.budget AS b (scope, name, daily_tokens, daily_cost)
    VALUES (p_scope, p_name, p_daily_tokens, p_daily_cost)
    ON CONFLICT (scope, name) DO UPDATE
       SET daily_tokens = excluded.daily_tokens, daily_cost = excluded.daily_cost, updated_at = now();
    PERFORM pg_notify('pgllm_budgets', p_scope || ':' || p_name);
END
$fn$;

-- Removes a budget (its jobs drain at once); false when there was none. The last one removed stops the count.
CREATE FUNCTION llm.budget_clear(p_scope text, p_name text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    DELETE FROM llm.budget AS b WHERE b.scope = p_scope AND b.name = p_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('pgllm_budgets', p_scope || ':' || p_name);
    RETURN true;
END
$fn$;

REVOKE ALL ON llm.budget, llm.budget_spend, llm.budget_reservation FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.budget_day(),
                       llm.budget_endpoint_of(text),
                       llm.budget_settle(),
                       llm.budget_usage(text, text, date),
                       llm.budget_average(text, text, date),
                       llm.budget_room(llm.budget, date),
                       llm.budget_trim(bigint[], text[], integer[], text[], integer[]),
                       llm.claim_budgeted(text, integer, double precision, text[], text[], text),
                       llm.budget_state(),
                       llm.budget_set(text, text, bigint, numeric),
                       llm.budget_clear(text, text)
   FROM PUBLIC;
GRANT SELECT ON llm.budget TO pgllm_worker;
GRANT EXECUTE ON FUNCTION llm.claim_budgeted(text, integer, double precision, text[], text[], text),
                          llm.budget_state()
   TO pgllm_worker;
