# Sourced by .ci/run and .ci/lowest: uv on PATH, uv's interpreter policy, find_python and phase.
# shellcheck shell=bash
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet uv || curl -LsSf https://astral.sh/uv/install.sh | sh
    export PATH="$HOME/.local/bin:$PATH"
fi
# uv must use the interpreters already here, never download its own.
export UV_PYTHON_DOWNLOADS=never

# The path of Python $1 (e.g. 3.13): pyenv's versions first, then PATH.
find_python() {
    local root candidate
    root="$( (command -v pyenv >/dev/null 2>&1 && pyenv root) || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for candidate in "$root"/versions/"$1".*/bin/python"$1" "$(command -v "python$1" || true)"; do
        if [[ -x "$candidate" ]]; then
            echo "$candidate"
            return
        fi
    done
    echo "Python $1 not found in $root/versions or on PATH" >&2
    return 1
}

# Run "$@" as one CI phase named $1 and print its wall time.
phase() {
    local name=$1 start=$SECONDS
    shift
    echo "=== $name"
    "$@"
    echo "=== $name: $((SECONDS - start)) s"
}
