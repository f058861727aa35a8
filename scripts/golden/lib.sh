# Checks and facts the golden scripts share; sourced after `set -euo pipefail`
# with LLAMA_CPP_DIR set.

# require_testdata DIR NAME...: each test file must be there, non-empty.
require_testdata() {
  local dir=$1 f
  shift
  for f in "$@"; do
    [ -s "$dir/$f" ] || { echo "$dir/$f is missing: run scripts/fetch-testdata.sh" >&2; exit 1; }
  done
}

# require_tools BIN TOOL...: each llama.cpp tool must be built in BIN.
require_tools() {
  local bin=$1 t
  shift
  for t in "$@"; do
    [ -x "$bin/$t" ] || { echo "$bin/$t is missing: build llama.cpp's tools (see build_ref.sh)" >&2; exit 1; }
  done
}

# llama_commit: the llama.cpp tree's commit, from git, or, for an unpacked
# sdist without git metadata, the short hash its build recorded.
llama_commit() {
  local commit
  commit="$(git -C "$LLAMA_CPP_DIR" rev-parse HEAD 2>/dev/null || true)"
  if [ -z "$commit" ]; then
    commit="$(sed -n 's/.*LLAMA_COMMIT = "\(.*\)";/\1/p' "$LLAMA_CPP_DIR/build/common/build-info.cpp")"
  fi
  echo "$commit"
}
