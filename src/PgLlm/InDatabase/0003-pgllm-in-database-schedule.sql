-- PgLlm in-database worker: the pg_cron schedule. pg_cron 1.4 runs a job at most once a minute, so
-- each scheduled run of llm.run_worker() loops for about 55 s and picks jobs up within a second.
-- Several workers (separate cron jobs, each one connection) run jobs side by side.
-- The jobs run as the role that applies this script; llm.worker_settings must be readable by it.
-- Idempotent: re-applied as a whole whenever its content changes.

DO $pgllm$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'PgLlm''s in-database worker schedule needs the PostgreSQL extension "pg_cron", which is not installed in database %', current_database()
              USING ERRCODE = 'undefined_object',
                    HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then run CREATE EXTENSION pg_cron; or turn scheduling off and CALL llm.run_worker() from a scheduler of your own.';
    END IF;
END
$pgllm$;

-- Schedules p_workers cron jobs named pgllm-worker-1..n that CALL llm.run_worker(), and removes
-- the current role's pgllm-worker-n jobs beyond p_workers. Returns the number of jobs scheduled.
CREATE OR REPLACE FUNCTION llm.schedule_worker(p_workers integer DEFAULT 1, p_schedule text DEFAULT '* * * * *')
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name text;
BEGIN
    IF p_workers IS NULL OR p_workers < 0 THEN
        RAISE EXCEPTION 'llm.schedule_worker: p_workers must be 0 or more' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_name IN
        SELECT j.jobname FROM cron.job AS j
         WHERE j.username = current_user AND j.jobname ~ '^pgllm-worker-[0-9]+$'
           AND substr(j.jobname, 14)::bigint > p_workers
    LOOP
        PERFORM cron.unschedule(v_name);
    END LOOP;
    FOR i IN 1 .. p_workers LOOP
        PERFORM cron.schedule('pgllm-worker-' || i, p_schedule, 'CALL llm.run_worker()');
    END LOOP;
    RETURN p_workers;
END
$fn$;

-- Removes the current role's PgLlm worker jobs. Returns the number removed.
CREATE OR REPLACE FUNCTION llm.unschedule_worker()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_name text;
    v_count integer := 0;
BEGIN
    FOR v_name IN
        SELECT j.jobname FROM cron.job AS j
         WHERE j.username = current_user AND j.jobname ~ '^pgllm-worker-[0-9]+$'
    LOOP
        PERFORM cron.unschedule(v_name);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$fn$;

REVOKE ALL ON FUNCTION llm.schedule_worker(integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION llm.unschedule_worker() FROM PUBLIC;
