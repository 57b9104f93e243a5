#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run).
#
#   bash tests/run.sh                          # everything
#   bash tests/run.sh --filter "FullyQualifiedName~Diagnostic"
#
# 1. Checks prerequisites: the .NET SDK (must be present), the PostgreSQL server binaries and,
#    for the in-database worker's tests, pg_cron and PL/Python (all installed with apt when missing
#    and running as root) and the http extension (pgsql-http, built from the vendored source tarball
#    ../shared/vendor/pgsql-http-1.7.2.tar.gz when missing; without the tarball the tests that need
#    the real extension are skipped, and counted as skipped), and for the operations console's browser
#    tests Chromium (the Debian package chromium, installed with apt when missing and running as root;
#    without it those tests are skipped, and counted as skipped). No server is started here: the tests
#    start their own throwaway instances.
# 2. Builds PgLlm.sln once, in Release.
# 3. Runs every test project tests/*/*.csproj in turn, without stopping at a failing one;
#    extra arguments are passed to each `dotnet test`.
# 4. Prints one line per project and, as the very last line, "N passed, N failed"
#    (", N skipped" is appended when tests were skipped). Exits non-zero when anything failed.
#
# Environment:
#   PGLLM_TEST_RESULTS  keep the .trx files in this directory (default: a temporary one, removed at exit)
#   PGLLM_PG_BIN        directory of initdb/pg_ctl/postgres, when they are elsewhere (also read by the tests)
#   PGLLM_CHROMIUM      a Chrome or Chromium executable for the console's browser tests (default: /usr/bin/chromium)
#   PGLLM_PGSQL_HTTP_TARBALL  the pgsql-http source tarball (default: ../shared/vendor/pgsql-http-1.7.2.tar.gz,
#                       relative to the repository root)
#   CI=true             quieter dotnet output (--nologo)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly SOLUTION="PgLlm.sln"
readonly CONFIGURATION="Release"
readonly PG_PACKAGE="postgresql-15"
# The in-database worker's tests: pg_cron runs the worker, PL/Python runs the test stand-in for
# the http extension (pgsql-http is not packaged for Debian 12).
readonly PG_CRON_PACKAGE="postgresql-15-cron"
readonly PG_PLPYTHON_PACKAGE="postgresql-plpython3-15"
# The real http extension, for the tests marked RealHttpFact: built from source (see ../shared/vendor/README.md).
readonly PGSQL_HTTP_TARBALL="${PGLLM_PGSQL_HTTP_TARBALL:-../shared/vendor/pgsql-http-1.7.2.tar.gz}"
readonly PGSQL_HTTP_BUILD_PACKAGES=(postgresql-server-dev-15 libpq-dev libcurl4-openssl-dev build-essential)
# The operations console's browser tests: headless Chromium from Debian's packages (never a downloaded build).
readonly CHROMIUM_PACKAGE="chromium"

say() { printf '==> %s\n' "$*"; }
warn() { printf 'run.sh: %s\n' "$*" >&2; }

# Something before the tests could run went wrong: explain, keep the summary contract, stop.
abort() {
    warn "$*"
    echo "0 passed, 1 failed"
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

nologo=()
if [ "${CI:-}" = "true" ]; then
    nologo=(--nologo)
fi

# ---------------------------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------------------------

check_dotnet() {
    if ! command -v dotnet >/dev/null 2>&1; then
        abort "the .NET SDK is not installed ('dotnet' is not on PATH); install the .NET 10 SDK (see global.json) and run again"
    fi
    if [ -z "$(dotnet --list-sdks 2>/dev/null)" ]; then
        abort "'dotnet' is on PATH but no .NET SDK is installed (only a runtime?); install the .NET 10 SDK (see global.json)"
    fi
}

find_initdb() {
    local candidate
    if [ -n "${PGLLM_PG_BIN:-}" ] && [ -x "$PGLLM_PG_BIN/initdb" ]; then
        echo "$PGLLM_PG_BIN/initdb"
        return 0
    fi
    if command -v initdb >/dev/null 2>&1; then
        command -v initdb
        return 0
    fi
    for candidate in /usr/lib/postgresql/*/bin/initdb; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# Installs Debian packages with apt, keeping their post-install scripts from starting services.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        return 127
    fi

    # The server package's post-install script would start a cluster on port 5432; the tests start
    # their own servers, so forbid service starts for the duration of the install (unless a policy exists).
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=1
    fi

    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || rc=$?

    if [ -n "$created_policy" ]; then
        rm -f "$policy"
    fi
    return "$rc"
}

install_postgres() {
    say "PostgreSQL server binaries not found: installing $PG_PACKAGE with apt"
    if ! command -v apt-get >/dev/null 2>&1; then
        abort "PostgreSQL server binaries are missing and apt-get is not available: install PostgreSQL 15 (initdb, pg_ctl, postgres) or set PGLLM_PG_BIN"
    fi
    local rc=0
    apt_install "$PG_PACKAGE" || rc=$?
    if [ "$rc" -ne 0 ]; then
        abort "apt-get could not install $PG_PACKAGE (exit code $rc)"
    fi
}

ensure_postgres_user() {
    if getent passwd postgres >/dev/null 2>&1; then
        return 0
    fi
    say "creating the 'postgres' OS user (PostgreSQL refuses to run as root; the tests switch to it)"
    if command -v useradd >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home --shell /bin/sh postgres \
            || abort "could not create the 'postgres' OS user"
    elif command -v adduser >/dev/null 2>&1; then
        adduser --system --group --home /var/lib/postgresql --no-create-home --shell /bin/sh postgres >/dev/null \
            || abort "could not create the 'postgres' OS user"
    else
        abort "the 'postgres' OS user is missing and neither useradd nor adduser is available to create it"
    fi
}

check_postgres() {
    local initdb
    if ! initdb="$(find_initdb)"; then
        if is_root; then
            install_postgres
            initdb="$(find_initdb)" || abort "$PG_PACKAGE was installed but initdb is still not found"
        else
            warn "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found."
            warn "Install them, then run again:  sudo apt-get install -y $PG_PACKAGE"
            warn "(or point PGLLM_PG_BIN at a directory that holds initdb, pg_ctl and postgres)"
            echo "0 passed, 1 failed"
            exit 1
        fi
    fi
    say "PostgreSQL: $initdb"
    if is_root; then
        ensure_postgres_user
    fi
}

# pg_cron and PL/Python, for the in-database worker's tests: checked by their libraries in the
# server's package library directory.
check_postgres_extensions() {
    local initdb bindir libdir
    initdb="$(find_initdb)" || return 0
    # initdb on PATH may be a link into the versioned directory (e.g. /usr/lib/postgresql/15/bin).
    initdb="$(readlink -f "$initdb" 2>/dev/null || echo "$initdb")"
    bindir="$(dirname "$initdb")"
    libdir="$("$bindir/pg_config" --pkglibdir 2>/dev/null || true)"
    if [ -z "$libdir" ] || [ ! -d "$libdir" ]; then
        libdir="$bindir/../lib"
    fi

    local -a missing=()
    [ -e "$libdir/pg_cron.so" ] || missing+=("$PG_CRON_PACKAGE")
    [ -e "$libdir/plpython3.so" ] || missing+=("$PG_PLPYTHON_PACKAGE")
    if [ "${#missing[@]}" -eq 0 ]; then
        say "pg_cron and PL/Python: $libdir"
        return 0
    fi

    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        warn "missing for the in-database worker's tests: ${missing[*]} (their tests will fail)"
        warn "install them, then run again:  sudo apt-get install -y ${missing[*]}"
        return 0
    fi

    local -a packages=()
    mapfile -t packages < <(pinned_packages "${missing[@]}")
    say "installing ${packages[*]} with apt (for the in-database worker's tests)"
    local rc=0
    apt_install "${packages[@]}" || rc=$?
    if [ "$rc" -ne 0 ]; then
        abort "apt-get could not install ${packages[*]} (exit code $rc)"
    fi
}

# Prints the packages one a line, those built from the server's source (PL/Python, the server's
# headers, libpq) pinned to the server's exact version, so that installing them never upgrades the
# server underneath running clusters.
pinned_packages() {
    local package server_version
    server_version="$(dpkg-query -W -f='${Version}' "$PG_PACKAGE" 2>/dev/null || true)"
    for package in "$@"; do
        case "$package" in
            "$PG_PLPYTHON_PACKAGE" | postgresql-server-dev-15 | libpq-dev)
                if [ -n "$server_version" ] && apt-cache madison "$package" 2>/dev/null | grep -Fq "| $server_version |"; then
                    echo "$package=$server_version"
                    continue
                fi
                ;;
        esac
        echo "$package"
    done
}

# The http extension (pgsql-http), for the in-database worker's tests that run through the real
# extension: built from the vendored source tarball when $(pg_config --pkglibdir)/http.so is missing.
# Nothing is built inside the repository. When it cannot be built, those tests are skipped (and
# counted as skipped in the summary); the other tests use a stand-in.
check_http_extension() {
    local initdb pg_config libdir
    initdb="$(find_initdb)" || return 0
    initdb="$(readlink -f "$initdb" 2>/dev/null || echo "$initdb")"
    pg_config="$(dirname "$initdb")/pg_config"
    [ -x "$pg_config" ] || pg_config="$(command -v pg_config || true)"
    libdir="$("$pg_config" --pkglibdir 2>/dev/null || true)"
    if [ -n "$libdir" ] && [ -e "$libdir/http.so" ]; then
        say "http extension: $libdir/http.so"
        return 0
    fi
    if [ ! -f "$PGSQL_HTTP_TARBALL" ]; then
        warn "the http extension is not installed and its source tarball $PGSQL_HTTP_TARBALL is not there: the tests that need the real extension will be skipped"
        return 0
    fi
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        warn "the http extension is not installed and building it needs root and apt-get: the tests that need the real extension will be skipped"
        return 0
    fi

    local -a packages=()
    mapfile -t packages < <(pinned_packages "${PGSQL_HTTP_BUILD_PACKAGES[@]}")
    say "building the http extension from $PGSQL_HTTP_TARBALL (installing ${packages[*]} with apt)"
    local rc=0
    apt_install "${packages[@]}" || rc=$?
    if [ "$rc" -ne 0 ]; then
        warn "apt-get could not install ${packages[*]} (exit code $rc): the tests that need the real http extension will be skipped"
        return 0
    fi

    local build log
    build="$(mktemp -d "${TMPDIR:-/tmp}/pgsql-http.XXXXXX")"
    log="$build/build.log"
    if tar -xzf "$PGSQL_HTTP_TARBALL" -C "$build" \
        && make -C "$build"/pgsql-http-* PG_CONFIG="$pg_config" >"$log" 2>&1 \
        && make -C "$build"/pgsql-http-* PG_CONFIG="$pg_config" install >>"$log" 2>&1; then
        say "http extension installed into $libdir"
    else
        tail -n 20 "$log" >&2 2>/dev/null || true
        warn "building the http extension failed: the tests that need the real extension will be skipped"
    fi
    rm -rf "$build"
}

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------

results_dir=""
keep_results=""
# Chromium, for the operations console's browser tests: installed with apt when missing (as root); without it
# those tests are skipped, with the reason, and counted as skipped.
check_chromium() {
    local browser
    for browser in "${PGLLM_CHROMIUM:-}" /usr/bin/chromium "$(command -v chromium 2>/dev/null || true)" "$(command -v chromium-browser 2>/dev/null || true)"; do
        if [ -n "$browser" ] && [ -x "$browser" ]; then
            say "Chromium: $browser"
            return 0
        fi
    done
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        warn "Chromium is not installed: the console's browser tests will be skipped (sudo apt-get install -y $CHROMIUM_PACKAGE)"
        return 0
    fi
    say "installing $CHROMIUM_PACKAGE with apt (for the console's browser tests)"
    local rc=0
    apt_install "$CHROMIUM_PACKAGE" || rc=$?
    if [ "$rc" -ne 0 ]; then
        warn "apt-get could not install $CHROMIUM_PACKAGE (exit code $rc): the console's browser tests will be skipped"
    fi
}

cleanup() {
    if [ -z "$keep_results" ] && [ -n "$results_dir" ] && [ -d "$results_dir" ]; then
        rm -rf "$results_dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build_solution() {
    local log="$results_dir/build.log"
    say "dotnet build $SOLUTION -c $CONFIGURATION"
    if ! dotnet build "$SOLUTION" -c "$CONFIGURATION" ${nologo[@]+"${nologo[@]}"} 2>&1 | tee "$log"; then
        warn "the build failed; errors:"
        # One line per distinct error (MSBuild repeats them in its summary).
        grep -E ': (fatal )?error [A-Z]*[0-9]*:|error MSB|error NU' "$log" | sed 's/^ *//' | sort -u >&2 \
            || tail -n 40 "$log" >&2
        echo "0 passed, 1 failed"
        exit 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Test projects
# ---------------------------------------------------------------------------------------------

is_test_project() {
    local csproj="$1"
    if grep -Eqi '<IsTestProject>[[:space:]]*false' "$csproj"; then
        return 1
    fi
    grep -Eqi '<IsTestProject>[[:space:]]*true|Include="Microsoft\.NET\.Test\.Sdk"|Sdk="MSTest\.Sdk' "$csproj"
}

in_solution() {
    local csproj="$1" windows
    windows="${csproj//\//\\}"
    grep -Fq "\"$windows\"" "$SOLUTION" || grep -Fq "\"$csproj\"" "$SOLUTION"
}

# Prints "total executed passed failed notExecuted" for one .trx file (0 0 0 0 0 if unreadable).
trx_counters() {
    local trx="$1" line
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import xml.etree.ElementTree' >/dev/null 2>&1; then
        if line="$(python3 - "$trx" <<'PY' 2>/dev/null
import sys
import xml.etree.ElementTree as ET

counters = None
for element in ET.parse(sys.argv[1]).iter():
    if element.tag.rsplit('}', 1)[-1] == 'Counters':
        counters = element
        break
if counters is None:
    raise SystemExit(1)

def get(name):
    try:
        return int(counters.get(name, '0'))
    except ValueError:
        return 0

failed = get('failed') + get('error') + get('timeout') + get('aborted')
print(get('total'), get('executed'), get('passed'), failed, get('notExecuted'))
PY
        )"; then
            echo "$line"
            return 0
        fi
    fi

    # Fallback without python: the <Counters .../> element is a single tag with name="value" attributes.
    local tag
    tag="$(tr '\n\r' '  ' <"$trx" | grep -o '<Counters [^>]*>' | head -n 1 || true)"
    attr() {
        local value
        value="$(printf '%s' "$tag" | sed -n "s/.*[[:space:]]$1=\"\([0-9]*\)\".*/\1/p")"
        echo "${value:-0}"
    }
    echo "$(attr total) $(attr executed) $(attr passed) $(($(attr failed) + $(attr error) + $(attr timeout) + $(attr aborted))) $(attr notExecuted)"
}

run_tests() {
    local -a projects=()
    local csproj
    shopt -s nullglob
    for csproj in tests/*/*.csproj; do
        if is_test_project "$csproj"; then
            projects+=("$csproj")
        fi
    done
    shopt -u nullglob

    if [ "${#projects[@]}" -eq 0 ]; then
        warn "no test projects found under tests/"
        echo "0 passed, 1 failed"
        exit 1
    fi

    local total_passed=0 total_failed=0 total_skipped=0
    local -a report=() problems=()
    local name dir rc trx
    for csproj in "${projects[@]}"; do
        name="$(basename "$csproj" .csproj)"
        dir="$results_dir/$name"
        rm -rf "$dir"
        mkdir -p "$dir"

        if ! in_solution "$csproj"; then
            say "$name is not in $SOLUTION: building it on its own"
            rc=0
            dotnet build "$csproj" -c "$CONFIGURATION" ${nologo[@]+"${nologo[@]}"} || rc=$?
            if [ "$rc" -ne 0 ]; then
                total_failed=$((total_failed + 1))
                report+=("$name: build failed (exit code $rc), counted as 1 failed")
                problems+=("$name: build failed")
                continue
            fi
        fi

        say "dotnet test $csproj${*:+ $*}"
        rc=0
        # A hung test run is aborted (and counted as failed) instead of blocking CI; every test
        # bounds its own waits far below this.
        dotnet test "$csproj" -c "$CONFIGURATION" --no-build ${nologo[@]+"${nologo[@]}"} \
            --blame-hang-timeout 10m --blame-hang-dump-type none \
            --logger "trx;LogFileName=$name.trx" --results-directory "$dir" "$@" || rc=$?

        local -a trx_files=()
        while IFS= read -r trx; do
            trx_files+=("$trx")
        done < <(find "$dir" -type f -name '*.trx' | sort)

        if [ "${#trx_files[@]}" -eq 0 ]; then
            total_failed=$((total_failed + 1))
            report+=("$name: no test results (exit code $rc; the test run crashed or did not start), counted as 1 failed")
            problems+=("$name: the test run crashed or did not start (no .trx)")
            continue
        fi

        local p_total=0 p_executed=0 p_passed=0 p_failed=0 p_not_executed=0 p_skipped=0
        local t e p f n
        for trx in "${trx_files[@]}"; do
            read -r t e p f n < <(trx_counters "$trx")
            p_total=$((p_total + t))
            p_executed=$((p_executed + e))
            p_passed=$((p_passed + p))
            p_failed=$((p_failed + f))
            p_not_executed=$((p_not_executed + n))
        done
        p_skipped=$((p_total - p_executed))
        if [ "$p_not_executed" -gt "$p_skipped" ]; then
            p_skipped=$p_not_executed
        fi

        local line="$name: $p_passed passed, $p_failed failed"
        if [ "$p_skipped" -gt 0 ]; then
            line+=", $p_skipped skipped"
        fi
        if [ "$rc" -ne 0 ] && [ "$p_failed" -eq 0 ]; then
            # The run was aborted (e.g. the test host crashed) without recording a failed test.
            p_failed=1
            line="$name: test run aborted (exit code $rc) after $p_passed passed: counted as 1 failed"
            problems+=("$name: the test run was aborted (exit code $rc)")
        fi
        report+=("$line")

        total_passed=$((total_passed + p_passed))
        total_failed=$((total_failed + p_failed))
        total_skipped=$((total_skipped + p_skipped))
    done

    echo
    say "results"
    local entry
    for entry in "${report[@]}"; do
        echo "    $entry"
    done
    if [ -n "$keep_results" ]; then
        echo "    (.trx files kept in $results_dir)"
    fi
    for entry in ${problems[@]+"${problems[@]}"}; do
        warn "$entry"
    done

    local summary="$total_passed passed, $total_failed failed"
    if [ "$total_skipped" -gt 0 ]; then
        summary+=", $total_skipped skipped"
    fi
    echo "$summary"
    if [ "$total_failed" -gt 0 ]; then
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------

check_dotnet
check_postgres
check_postgres_extensions
check_http_extension
check_chromium

if [ -n "${PGLLM_TEST_RESULTS:-}" ]; then
    mkdir -p "$PGLLM_TEST_RESULTS"
    results_dir="$(cd "$PGLLM_TEST_RESULTS" && pwd)"
    keep_results=1
else
    results_dir="$(mktemp -d "${TMPDIR:-/tmp}/pgllm-tests.XXXXXX")"
fi

build_solution
run_tests "$@"
