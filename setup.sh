#!/usr/bin/env bash
# Create (or refresh) the project's Python environment from nothing.
#
#   ./setup.sh          the project (pyproject.toml, editable), its dependencies, Horovod
#   ./setup.sh --dev    the same plus what the tests need (the project's `dev` extra)
#
# Safe to run twice: a stamp records the hash of pyproject.toml, the requirement files, the
# project's top-level packages and the Horovod build; when nothing changed the script only
# verifies and exits. The environment lives in $NEWSREC_VENV (default: .venv next to this script).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${NEWSREC_VENV:-$here/.venv}"
python_bin="${PYTHON:-python3.11}"
horovod_version="0.28.1"

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown argument '$arg' (expected --dev)" >&2; exit 2 ;;
  esac
done

# The editable install maps each top-level package to its folder: a new package needs a new
# install, so the packages' names are part of the stamp.
stamp_value="$(cd "$here" && { cat pyproject.toml requirements.txt constraints.txt
                               ls -d */__init__.py; } | sha256sum | cut -c1-16)"
stamp_value="$stamp_value-hvd${horovod_version}-dev${dev}"
stamp_file="$venv/.newsrec-setup-stamp"
# Run from / (so the checkout is not on sys.path): the project is installed from this checkout.
installed_here="import sys, common.config
assert common.config.__file__.startswith(sys.argv[1] + '/')"

if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp_value" ]] && (cd / && "$venv/bin/python" \
     -c "import horovod.tensorflow, petastorm, pyspark; $installed_here" "$here") 2>/dev/null; then
  echo "setup.sh: environment $venv is up to date"
  exit 0
fi

command -v "$python_bin" >/dev/null || { echo "setup.sh: $python_bin not found (Python 3.11 is required)" >&2; exit 1; }
command -v java >/dev/null || { echo "setup.sh: java not found (Java 17 is required by Spark)" >&2; exit 1; }

if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup.sh: creating $venv"
  "$python_bin" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade "pip==24.3.1" "setuptools==75.6.0" "wheel==0.45.1"

project="$here"
[[ $dev == 1 ]] && project="$here[dev]"
echo "setup.sh: installing the project (editable) and its dependencies (under constraints.txt)"
"${pip[@]}" install --quiet --no-build-isolation -c "$here/constraints.txt" -e "$project"

# Horovod: built from source against the TensorFlow just installed, CPU collectives
# through Gloo, no extras (horovod[tensorflow] would pull the full tensorflow wheel,
# horovod[spark] caps pyarrow below 11). pip caches the built wheel.
if ! "$venv/bin/python" -c "import horovod, horovod.tensorflow; assert horovod.__version__ == '$horovod_version'" 2>/dev/null; then
  echo "setup.sh: building horovod $horovod_version (2-5 minutes on 2 cores the first time)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=gloo \
    "${pip[@]}" install --quiet --no-build-isolation --no-deps "horovod==$horovod_version"
  # horovod's own runtime requirements, pinned in constraints.txt
  "${pip[@]}" install --quiet -c "$here/constraints.txt" cloudpickle psutil pyyaml packaging cffi
fi

TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 "$venv/bin/python" - <<'PY'
import horovod.tensorflow as hvd, petastorm, pyspark, pyarrow, numpy, tensorflow as tf
print(f"setup.sh: ok: tensorflow {tf.__version__}, pyspark {pyspark.__version__}, "
      f"pyarrow {pyarrow.__version__}, numpy {numpy.__version__}, petastorm {petastorm.__version__}")
PY
(cd / && "$venv/bin/python" -c "$installed_here" "$here") \
  || { echo "setup.sh: the project installed in $venv is not this checkout's" >&2; exit 1; }
echo "$stamp_value" > "$stamp_file"
