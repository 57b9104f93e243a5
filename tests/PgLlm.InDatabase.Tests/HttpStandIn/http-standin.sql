-- TEST STAND-IN for the pgsql-http extension. NOT the real extension, and not for production.
--
-- pgsql-http is not packaged for Debian 12, where the tests run: the fast tests use this stand-in, and
-- the tests marked RealHttpFact run through the real extension, which tests/run.sh builds from the
-- vendored source tarball. This script creates, in the schema
-- http_standin, the part of the pgsql-http 1.7 SQL API that PgLlm's in-database worker uses, with
-- the same names and signatures:
--   types     http_header(field, value), http_response(status, content_type, headers, content),
--             http_request(method, uri, headers, content_type, content), domain http_method
--   functions http_header(field varchar, value varchar) RETURNS http_header
--             http(request http_request) RETURNS http_response
-- http() performs a real HTTP request (PL/Python, urllib, no proxy), honours the http.timeout_msec
-- setting as the real extension does (unset or 0: 5000 ms here), returns non-2xx responses as
-- rows like the real one, and raises an error on a timeout or a failed connection, with curl-like
-- messages ("Operation timed out after N milliseconds ...", "Failed to connect to ...").
-- Needs plpython3u (Debian: postgresql-plpython3-15) and a superuser to install.

CREATE EXTENSION IF NOT EXISTS plpython3u;
CREATE SCHEMA IF NOT EXISTS http_standin;

CREATE DOMAIN http_standin.http_method AS text;

CREATE TYPE http_standin.http_header AS (
    field varchar,
    value varchar
);

CREATE TYPE http_standin.http_response AS (
    status integer,
    content_type varchar,
    headers http_standin.http_header[],
    content varchar
);

CREATE TYPE http_standin.http_request AS (
    method http_standin.http_method,
    uri varchar,
    headers http_standin.http_header[],
    content_type varchar,
    content varchar
);

CREATE FUNCTION http_standin.http_header(field varchar, value varchar)
RETURNS http_standin.http_header
AS $$ SELECT $1, $2 $$
LANGUAGE sql;

CREATE FUNCTION http_standin.http(request http_standin.http_request)
RETURNS http_standin.http_response
LANGUAGE plpython3u
AS $py$
import socket
import urllib.error
import urllib.request

setting = plpy.execute("SELECT current_setting('http.timeout_msec', true) AS t")[0]["t"]
timeout_ms = int(setting) if setting not in (None, "", "0") else 5000

method = (request["method"] or "GET").upper()
data = request["content"].encode("utf-8") if request["content"] is not None else None
req = urllib.request.Request(request["uri"], data=data, method=method)
for header in request["headers"] or []:
    if header is None or not header["field"]:
        continue
    if header["field"].lower() == "content-type":
        plpy.notice("'Content-Type' is not supported as an optional header")
        continue
    req.add_header(header["field"], header["value"] or "")
if request["content_type"] is not None:
    req.add_header("Content-Type", request["content_type"])

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def as_row(status, headers, body):
    return {
        "status": status,
        "content_type": headers.get("Content-Type"),
        "headers": [{"field": k, "value": v} for k, v in headers.items()],
        "content": body.decode("utf-8", "replace"),
    }

failure = None
try:
    with opener.open(req, timeout=timeout_ms / 1000.0) as response:
        return as_row(response.status, response.headers, response.read())
except urllib.error.HTTPError as error:
    return as_row(error.code, error.headers, error.read())
except (socket.timeout, TimeoutError):
    failure = "Operation timed out after %d milliseconds with 0 bytes received" % timeout_ms
except urllib.error.URLError as error:
    if isinstance(error.reason, (socket.timeout, TimeoutError)):
        failure = "Operation timed out after %d milliseconds with 0 bytes received" % timeout_ms
    else:
        failure = "Failed to connect to %s: %s" % (request["uri"], error.reason)
except (ConnectionError, OSError) as error:
    failure = "Failed to connect to %s: %s" % (request["uri"], error)

# Raised outside the except blocks, so the message reads like the extension's own.
plpy.error(failure)
$py$;

CREATE FUNCTION http_standin.http_get(uri varchar)
RETURNS http_standin.http_response
AS $$ SELECT http_standin.http(('GET', $1, NULL, NULL, NULL)::http_standin.http_request) $$
LANGUAGE sql;

CREATE FUNCTION http_standin.http_post(uri varchar, content varchar, content_type varchar)
RETURNS http_standin.http_response
AS $$ SELECT http_standin.http(('POST', $1, NULL, $3, $2)::http_standin.http_request) $$
LANGUAGE sql;
