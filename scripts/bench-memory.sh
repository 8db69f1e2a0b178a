#!/usr/bin/env bash
# Memory with large records and a stalled output (issue 13, finding 1), one command:
#
#   bash scripts/bench-memory.sh
#
# Writes MEM_RECORDS audit records of 40 KiB (120 MB by default) into a log file, then runs the
# release `auditrail run` on it in each scenario, with each budget of MEM_BUDGETS:
#
#   stdout-stalled   the stdout output writes into a pipe nobody reads
#   kafka-stopped    stdout to /dev/null and Kafka to a tansu broker stopped with SIGSTOP
#                    before the first record (both outputs required)
#
# Once reading has stopped (the position of auditrail's handle on the log, from
# /proc/<pid>/fdinfo, unchanged for 2 s) it prints how far it read, what the budget says is
# held (auditrail_memory_used_bytes), VmRSS and VmHWM from /proc. MEM_BEFORE=path/to/old/auditrail also runs an older binary (without a
# `memory` section) for comparison.
#
# Environment: MEM_RECORDS [3000]  MEM_BUDGETS ["16777216 33554432 67108864"]
#              MEM_SCENARIOS ["stdout-stalled kafka-stopped"]  MEM_BEFORE [unset]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '== %s\n' "$*" >&2; }
log "building the release binary"
cargo build --release --bin auditrail >&2
target="${CARGO_TARGET_DIR:-$PWD/target}"

exec python3 - "$target/release/auditrail" <<'PY'
import json, os, re, signal, socket, subprocess, sys, tempfile, time, urllib.request

binary = sys.argv[1]
records = int(os.environ.get("MEM_RECORDS", "3000"))
budgets = [int(b) for b in os.environ.get("MEM_BUDGETS", "16777216 33554432 67108864").split()]
scenarios = os.environ.get("MEM_SCENARIOS", "stdout-stalled kafka-stopped").split()
before = os.environ.get("MEM_BEFORE")

work = tempfile.mkdtemp(prefix="auditrail-mem-")
logs = os.path.join(work, "logs")
os.makedirs(logs)
blob = "b" * (40 * 1024)
with open(os.path.join(work, "input.log"), "w") as f:
    for i in range(records):
        f.write(f'{{"level": "audit", "recordType": "bulkExport", "id": "large-{i}", "blob": "{blob}"}}\n')
size = os.path.getsize(os.path.join(work, "input.log"))
print(f"input: {records} records of 40 KiB, {size / 2**20:.0f} MiB; work dir {work}", file=sys.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


def read_offset(pid, path):
    """How far the process has read `path`: the position of its open file description."""
    best = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != path:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                best = max(best, int(f.readline().split()[1]))
        except OSError:
            pass
    return best


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{")[0]
        samples[name] = samples.get(name, 0.0) + float(value)
    return samples


def run(label, binary, budget, scenario):
    case = tempfile.mkdtemp(dir=work)
    os.makedirs(os.path.join(case, "logs"))
    log_path = os.path.join(case, "logs", "0.log")
    os.link(os.path.join(work, "input.log"), log_path)
    port = free_port()
    memory = f"memory:\n  budget_bytes: {budget}\n" if budget else ""
    broker = None
    outputs = "outputs:\n  stdout: {}\n"
    if scenario == "kafka-stopped":
        kport = free_port()
        url = f"tcp://127.0.0.1:{kport}"
        broker = subprocess.Popen(
            ["tansu", "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while socket.socket().connect_ex(("127.0.0.1", kport)) != 0:
            time.sleep(0.05)
        outputs += (f"  kafka:\n    brokers: 127.0.0.1:{kport}\n    create_topics: true\n"
                    "    topic_settings: {partitions: 1, replication_factor: 1}\n")
    config = os.path.join(case, "run.yaml")
    with open(config, "w") as f:
        f.write(f"""metrics:
  listen: 127.0.0.1:{port}
source:
  paths: [{case}/logs/*.log]
  checkpoint_dir: {case}/checkpoints
  read_from: beginning
{memory}{outputs}""")
    if scenario == "stdout-stalled":
        r, w = os.pipe()  # read end held open, never read
        stdout = w
    else:
        r, stdout = None, subprocess.DEVNULL
    proc = subprocess.Popen([binary, "run", "--config", config], stdout=stdout,
                            stderr=open(os.path.join(case, "stderr.log"), "w"))
    if r is not None:
        os.close(w)
    try:
        if broker is not None:
            # Let the topic be created, then stop the broker before records flow.
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    if scrape(port).get("auditrail_kafka_broker_up", 0) >= 1:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            broker.send_signal(signal.SIGSTOP)
        last, still, samples = -1, 0, {}
        deadline = time.time() + 120
        while still < 8 and time.time() < deadline:
            time.sleep(0.25)
            try:
                samples = scrape(port)
            except OSError:
                continue
            read = read_offset(proc.pid, log_path)
            still = still + 1 if read == last else 0
            last = read
        mem = status(proc.pid)
        return {
            "binary": label, "scenario": scenario,
            "budget MiB": f"{budget / 2**20:.0f}" if budget else "none",
            "read MiB": f"{last / 2**20:.1f}",
            "held MiB": (f"{samples['auditrail_memory_used_bytes'] / 2**20:.1f}"
                         if "auditrail_memory_used_bytes" in samples else "-"),
            "VmRSS MiB": f"{mem['VmRSS']:.1f}", "VmHWM MiB": f"{mem['VmHWM']:.1f}",
        }
    finally:
        proc.kill()
        proc.wait()
        if r is not None:
            os.close(r)
        if broker is not None:
            broker.send_signal(signal.SIGCONT)
            broker.kill()
            broker.wait()


rows = []
for scenario in scenarios:
    if before:
        rows.append(run("before", before, None, scenario))
        print(rows[-1], file=sys.stderr)
    for budget in budgets:
        rows.append(run("this", binary, budget, scenario))
        print(rows[-1], file=sys.stderr)
cols = list(rows[0].keys())
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for row in rows:
    print("| " + " | ".join(str(row[c]) for c in cols) + " |")
PY
