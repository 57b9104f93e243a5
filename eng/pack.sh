#!/usr/bin/env bash
# Packs every packable project of PgLlm.sln (Release) into a local NuGet feed.
#
#   bash eng/pack.sh                      # -> artifacts/packages (git-ignored)
#   bash eng/pack.sh --output DIR         # -> DIR
#   bash eng/pack.sh --version 0.2.0-dev  # a version other than Directory.Build.props' <Version>
#
# The packages: PgLlm (the runtime, with the source generator under analyzers/dotnet/cs), PgLlm.Local
# (throwaway PostgreSQL and deterministic model endpoint), the command line (PgLlm.Cli, the dotnet tool
# `pgllm`, and its library when the solution has one) and PgLlm.Templates (`dotnet new pgllm`).
# Tests, benchmarks and examples set IsPackable=false.
#
# Then:
#   dotnet tool install -g PgLlm.Cli --add-source artifacts/packages
#   dotnet new install artifacts/packages/PgLlm.Templates.*.nupkg && dotnet new pgllm -o MyApp
#
# Prints the packages it wrote, one a line. Exits non-zero (with the build's errors) when packing fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly SOLUTION="PgLlm.sln"

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

output="artifacts/packages"
version=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --output | -o)
            [ "$#" -ge 2 ] || { echo "pack.sh: $1 needs a directory" >&2; exit 2; }
            output="$2"
            shift 2
            ;;
        --version)
            [ "$#" -ge 2 ] || { echo "pack.sh: $1 needs a version" >&2; exit 2; }
            version="$2"
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "pack.sh: unknown argument '$1' (see --help)" >&2
            exit 2
            ;;
    esac
done

if ! command -v dotnet >/dev/null 2>&1; then
    echo "pack.sh: the .NET SDK (dotnet) is not on PATH" >&2
    exit 1
fi

mkdir -p "$output"
output="$(cd "$output" && pwd)"

# Packages of an earlier pack with the same version would otherwise stay beside the new ones.
shopt -s nullglob
stale=("$output"/PgLlm*.nupkg "$output"/PgLlm*.snupkg)
shopt -u nullglob
if [ "${#stale[@]}" -gt 0 ]; then
    rm -f "${stale[@]}"
fi

args=(pack "$SOLUTION" -c Release -o "$output" --nologo -v quiet)
if [ -n "$version" ]; then
    args+=("-p:Version=$version")
fi

log="$(mktemp "${TMPDIR:-/tmp}/pgllm-pack.XXXXXX")"
trap 'rm -f "$log"' EXIT
if ! dotnet "${args[@]}" >"$log" 2>&1; then
    # One line per distinct error (MSBuild repeats them in its summary).
    grep -E ': (fatal )?error [A-Z]*[0-9]*:|error MSB|error NU' "$log" | sed 's/^ *//' | sort -u >&2 \
        || tail -n 40 "$log" >&2
    echo "pack.sh: dotnet pack failed" >&2
    exit 1
fi

shopt -s nullglob
packages=("$output"/*.nupkg)
shopt -u nullglob
if [ "${#packages[@]}" -eq 0 ]; then
    echo "pack.sh: dotnet pack wrote no package into $output" >&2
    exit 1
fi

echo "Packed ${#packages[@]} packages into $output:"
for package in "${packages[@]}"; do
    echo "  $(basename "$package")"
done
