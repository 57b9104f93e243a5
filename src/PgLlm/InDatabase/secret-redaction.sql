-- PgLlm in-database worker: removes secrets from text bound for the queue (llm.job.last_error, errors),
-- by the rules of the .NET worker's SecretRedactor (src/PgLlm/Worker): the configured API key wherever
-- it appears (an endpoint may echo it: "Incorrect API key provided: sk-..."), then anything shaped like
-- a bearer token or an OpenAI-style key. Keys shorter than 8 characters are not searched for verbatim
-- (masking a few common characters everywhere would make messages unreadable); the patterns still apply.
-- Part of the in-database worker's script (appended to 0002-pgllm-in-database.sql).

CREATE OR REPLACE FUNCTION llm.redact_secrets(p_text text, p_secret text)
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT regexp_replace(
             regexp_replace(
               CASE WHEN length(p_secret) >= 8 THEN replace(p_text, p_secret, '[redacted]') ELSE p_text END,
               -- A token68 (RFC 9110) of 8 characters or more: "the bearer of bad news" keeps its words.
               '(\yBearer\s+)[A-Za-z0-9._~+/-]{8,}=*', '\1[redacted]', 'gi'),
             '\ysk-[A-Za-z0-9_-]{16,}', '[redacted]', 'g');
$fn$;
