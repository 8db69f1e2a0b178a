#!/usr/bin/env bash
# The crash loop of the file source (issue 12): the kubelet simulator writes and rotates
# continuously while the real `auditrail run` is SIGKILLed at random moments and restarted,
# CRASH_LOOP_KILLS times (default 100); then it is stopped cleanly. Deduplicated by id, the
# shipped records must be exactly the written ones, byte for byte, with no gap record. It
# prints the duplicates each restart cost (min, median, max) and the total time.
#
#   bash scripts/crash-loop.sh                                   # 100 kills
#   CRASH_LOOP_KILLS=20 CRASH_LOOP_SEED=42 bash scripts/crash-loop.sh
#   CRASH_LOOP_CHECKPOINT_INTERVAL=100ms bash scripts/crash-loop.sh
#
# CRASH_LOOP_SEED replays the kill moments and the writes (printed at the start);
# CRASH_LOOP_CHECKPOINT_INTERVAL is source.checkpoint_interval (default 1s, the default of
# auditrail). Extra arguments go to cargo (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
export CRASH_LOOP_KILLS="${CRASH_LOOP_KILLS:-100}"
exec cargo test "$@" --test model crash_loop -- --ignored --exact crash_loop --nocapture
