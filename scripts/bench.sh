#!/usr/bin/env bash
# The auditrail benchmark (issue 8), one command:
#
#   bash scripts/bench.sh
#
# Builds the release binaries, writes the standard workload (`auditrail-gen`: 1,000,000 CRI
# lines, ~250 MB, 10% Immuta audit records) into a temporary directory (so it sits in the page
# cache), then runs the scenarios below and prints one table. Each figure is the median of
# BENCH_RUNS runs. BENCHMARKS.md describes the workload and every figure.
#
#   check   `auditrail check` to /dev/null: input lines/s, MB/s, lines per CPU-second, peak RSS
#   run     `auditrail run` to a local tansu broker until every record is acknowledged (the
#           checkpoint reaches the end of the file), then SIGTERM; delivered records counted by
#           consuming the topics
#   steady  a writer appends at BENCH_RATE bytes/s for BENCH_STEADY_SECONDS while auditrail
#           ships: CPU share of one core, peak/steady RSS, CRI-timestamp-to-consumer latency
#   pause   the same load with the broker stopped (SIGSTOP) for BENCH_PAUSE_SECONDS: peak RSS,
#           and that every record still arrives
#   idle    `auditrail run` on a CRI file nothing writes to, once with the Kafka output connected
#           to tansu and once with only the stdout output: after BENCH_IDLE_SETTLE s, over
#           BENCH_IDLE_SECONDS: % of a core, RSS, threads, wake-ups/s (voluntary context
#           switches of all threads)
#   startup time from exec to /readyz answering 200 (stdout output, no Kafka), and the size of
#           the stripped binary
#           CPU before / during / after the pause (and per thread during it), and that every
#           record still arrives
#   kill    the same with the broker killed (SIGKILL, connections refused) for
#           BENCH_PAUSE_SECONDS and started again on its SQLite storage
#
# Environment (defaults in brackets):
#   BENCH_LINES [1000000]  BENCH_RUNS [3]  BENCH_SEED [1]  BENCH_SCENARIOS ["check run steady pause kill idle startup"]
#   BENCH_STEADY_SECONDS [60]  BENCH_RATE [10000000]  BENCH_PAUSE_SECONDS [30]
#   BENCH_PAUSE_LEAD [5]  BENCH_PAUSE_TAIL [15]  (seconds of load before and after the pause)
#   BENCH_IDLE_SECONDS [60]  BENCH_IDLE_SETTLE [5]  (idle: measured span, and the wait before it)
#   BENCH_KILL_RATE [1000000]  (the kill scenario's write rate: tansu's SQLite storage is slow)
#   BENCH_COMPRESSION [the default, lz4]: outputs.kafka.compression (none, gzip, snappy, lz4,
#     zstd); the run scenario reports the bytes sent over loopback (requests and answers)
#   BENCH_INTEGRITY [off]: `chain` (every record linked, SHA-256), `hmac` (linked with a key),
#     `digests` (hmac and an Ed25519-signed digest every 1,000 records, to topic audit-digests;
#     the key is made with `openssl genpkey`)
#   BENCH_DIR [mktemp -d]  BENCH_KEEP [0]: keep the work directory (logs, configs, results)
#   BENCH_OUT [<work dir>/results.json]: all raw per-run figures as JSON
#   CARGO_TARGET_DIR [./target]
#   BENCH_BIN: measure the binaries in this directory (auditrail, auditrail-gen,
#     examples/count_topic: a saved build) instead of building
#
# Quick run: BENCH_LINES=100000 BENCH_RUNS=1 BENCH_STEADY_SECONDS=10 BENCH_PAUSE_SECONDS=5 bash scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '== %s\n' "$*" >&2; }

if [ -n "${BENCH_BIN:-}" ]; then
  log "using the binaries in $BENCH_BIN (not building)"
else
  target="${CARGO_TARGET_DIR:-$PWD/target}"
  log "building release binaries (target dir $target)"
  cargo build --release --bins --example count_topic >&2
  export BENCH_BIN="$target/release"
fi

command -v tansu >/dev/null 2>&1 || {
  log "tansu is needed for the run/steady/pause scenarios: cargo install tansu --features dynostore --locked"
  exit 2
}
command -v python3 >/dev/null 2>&1 || { log "python3 is needed"; exit 2; }

if [ -n "${BENCH_DIR:-}" ]; then
  work="$BENCH_DIR"
  mkdir -p "$work"
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/auditrail-bench.XXXXXX")"
fi
if [ "${BENCH_KEEP:-0}" != "1" ] && [ -z "${BENCH_DIR:-}" ]; then
  trap 'rm -rf "$work"' EXIT
fi

export BENCH_WORK="$work"
export BENCH_LINES="${BENCH_LINES:-1000000}"
export BENCH_SEED="${BENCH_SEED:-1}"

log "generating the standard workload: $BENCH_LINES lines, seed $BENCH_SEED"
rm -f "$work/workload.log"
"$BENCH_BIN/auditrail-gen" --lines "$BENCH_LINES" --seed "$BENCH_SEED" \
  --output "$work/workload.log" 2>"$work/workload.json"
cat "$work/workload.json" >&2
cat "$work/workload.log" >/dev/null # into the page cache

cat >"$work/bench.py" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, threading, time

BIN = os.environ["BENCH_BIN"]
WORK = os.environ["BENCH_WORK"]
LINES = int(os.environ["BENCH_LINES"])
SEED = int(os.environ["BENCH_SEED"])
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SCENARIOS = os.environ.get("BENCH_SCENARIOS", "check run steady pause kill idle startup").split()
STEADY = float(os.environ.get("BENCH_STEADY_SECONDS", "60"))
RATE = int(os.environ.get("BENCH_RATE", "10000000"))
PAUSE = float(os.environ.get("BENCH_PAUSE_SECONDS", "30"))
PAUSE_LEAD = float(os.environ.get("BENCH_PAUSE_LEAD", "5"))
PAUSE_TAIL = float(os.environ.get("BENCH_PAUSE_TAIL", "15"))
IDLE = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
IDLE_SETTLE = float(os.environ.get("BENCH_IDLE_SETTLE", "5"))
# tansu's SQLite storage (which the kill scenario needs, to keep what it acknowledged across
# the restart) ingests far less than 10 MB/s of input carries on this machine.
KILL_RATE = int(os.environ.get("BENCH_KILL_RATE", "1000000"))
COMPRESSION = os.environ.get("BENCH_COMPRESSION")
INTEGRITY = os.environ.get("BENCH_INTEGRITY", "")
OUT = os.environ.get("BENCH_OUT") or os.path.join(WORK, "results.json")
AUDITRAIL = os.path.join(BIN, "auditrail")
GEN = os.path.join(BIN, "auditrail-gen")
COUNT = os.path.join(BIN, "examples", "count_topic")
WORKLOAD = os.path.join(WORK, "workload.log")
TOPICS = ["audit-60d", "audit-forever"]
TICK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

workload = json.load(open(os.path.join(WORK, "workload.json")))
started = []  # every process this script started, to clean up


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def spawn(args, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(args, **kw)
    started.append(p)
    return p


def reap(p):
    """Waits for a child; returns (exit status, rusage of that child alone)."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru


def cleanup():
    for p in started:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
            except (ProcessLookupError, ChildProcessError):
                pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """A tansu broker on loopback. `persistent`: its topics live in a SQLite file in its own
    directory (tansu's `libsql` feature), so they survive `kill` and `restart` (the kill
    scenario); otherwise in memory."""

    def __init__(self, name, persistent=False):
        self.port = free_port()
        self.name = name
        self.dir = os.path.join(WORK, f"{name}.tansu")
        os.makedirs(self.dir, exist_ok=True)
        self.storage = "sqlite://tansu.db" if persistent else "memory://tansu/"
        self.start()

    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = spawn(
            ["tansu", "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage],
            cwd=self.dir, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(WORK, f"{self.name}.tansu.log"), "a"))
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("tansu did not start listening")
                time.sleep(0.05)

    def kill(self):
        """SIGKILL: its connections are reset, new ones refused until `start`."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


RETENTION = """retention:
  default: standard
  classes:
    standard: {days: 60, topic: audit-60d}
    forever: {days: null, topic: audit-forever}
  types:
    forever: [blobFetch, dataSourceSubscription, globalPolicyApproved, globalPolicyApprovalRescinded,
      globalPolicyChangeRequested, globalPolicyConflictResolved, globalPolicyCreate, globalPolicyDelete,
      globalPolicyDisabled, globalPolicyUpdate, nativeQuery, policyExemption, policyHandlerCreate,
      policyHandlerUpdate, prestoQuery, spark, sqlQuery]
"""


def write_config(dirname, broker=None, checkpoint_interval="1s", metrics_port=None):
    """The config of examples/auditrail.yaml (four detectors, Immuta retention), reading
    `<dir>/logs/*.log` as CRI, shipping to `broker` when given (else to stdout, the default
    output); the metrics server on `metrics_port` when given (else, with a broker, on a free
    port, and without one on the default port)."""
    os.makedirs(os.path.join(dirname, "logs"), exist_ok=True)
    text = f"""source:
  paths: ["{dirname}/logs/*.log"]
  format: cri
  checkpoint_dir: {dirname}/checkpoints
  checkpoint_interval: {checkpoint_interval}
audit:
  formats: [immuta, sym, monolog, pryv]
types:
  include: [all]
{RETENTION}"""
    if broker or metrics_port:
        # The metrics server stays on (it is part of what runs in a pod), on a free loopback
        # port so that concurrent runs and tests do not collide on 9464.
        text += f"""metrics:
  listen: "127.0.0.1:{metrics_port or free_port()}"
"""
    if broker:
        text += f"""outputs:
  kafka:
    brokers: "{broker.address}"
    create_topics: true
    topic_settings: {{partitions: 1, replication_factor: 1}}
"""
        if COMPRESSION:
            text += f"    compression: {COMPRESSION}\n"
    if INTEGRITY and broker:
        text += integrity_yaml(dirname)
    path = os.path.join(dirname, "auditrail.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def integrity_yaml(dirname):
    """The `integrity` section BENCH_INTEGRITY asks for, its keys written into `dirname`."""
    assert INTEGRITY in ("chain", "hmac", "digests"), f"BENCH_INTEGRITY={INTEGRITY}"
    text = "integrity:\n  chain: true\n"
    if INTEGRITY in ("hmac", "digests"):
        key = os.path.join(dirname, "chain.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        text += f"  chain_key_file: {key}\n"
    if INTEGRITY == "digests":
        signing = os.path.join(dirname, "signing.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", signing],
                       check=True, stderr=subprocess.DEVNULL)
        text += f"  digests: {{topic: audit-digests, signing_key_file: {signing}}}\n"
    return text


def checkpoint_offset(dirname, log_path):
    try:
        with open(os.path.join(dirname, "checkpoints", "checkpoints.json")) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    offsets = [e["offset"] for e in data.get("files", []) if e.get("path") == log_path]
    return max(offsets) if offsets else None


def wait_for_checkpoint(dirname, log_path, proc, timeout, poll=0.02):
    """Until the checkpoint of `log_path` reaches its size: every record acknowledged."""
    size = os.path.getsize(log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if checkpoint_offset(dirname, log_path) == size:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def consume(broker, expect=None, expect_file=None, latency=False, idle_ms=15000):
    args = [COUNT, "--brokers", broker.address, "--topics", ",".join(TOPICS),
            "--idle-ms", str(idle_ms)]
    if expect is not None:
        args += ["--expect", str(expect)]
    if expect_file:
        args += ["--expect-file", expect_file]
    if latency:
        args += ["--latency"]
    return spawn(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def consumed(p):
    out, _ = p.communicate()
    return json.loads(out.strip().splitlines()[-1])


def loopback_bytes():
    """Bytes sent over the loopback interface so far (every local connection, both ways)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    return 0


def rss_split(pid):
    """(RssAnon, RssFile) bytes of a live process: its private memory, and the pages of its
    binary and libraries it maps (shared with every process that maps the same files)."""
    anon = file = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
            elif line.startswith("RssFile:"):
                file = int(line.split()[1]) * 1024
    return anon, file


def proc_sample(pid):
    """(utime+stime in seconds, VmRSS bytes, VmHWM bytes) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, rss, hwm


def thread_cpu(pid):
    """CPU seconds (utime+stime) of each thread of a live process, summed by thread name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def thread_share(before, after, seconds):
    """% of a core each thread name took between two `thread_cpu` readings, largest first."""
    shares = {k: 100 * (after.get(k, 0.0) - before.get(k, 0.0)) / seconds for k in after}
    return {k: round(v, 2) for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v > 0}


class Sampler(threading.Thread):
    """Samples a process's CPU time and memory every `interval` seconds."""

    def __init__(self, pid, interval=0.25):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples, self.stop_flag = pid, interval, [], False

    def run(self):
        while not self.stop_flag:
            try:
                self.samples.append((time.monotonic(),) + proc_sample(self.pid))
            except (OSError, IndexError, ValueError):
                return
            time.sleep(self.interval)

    def cpu_share(self, t0, t1):
        """CPU time over wall time between the first and last samples in [t0, t1], in %."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return float("nan")
        return 100 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def max_rss(self, t0, t1):
        return max((s[2] for s in self.samples if t0 <= s[0] <= t1), default=0)


def start_auditrail(config, name):
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
    return spawn([AUDITRAIL, "run", "--config", config], env=env,
                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(WORK, f"{name}.auditrail.log"), "w"))


def terminate(p):
    os.kill(p.pid, signal.SIGTERM)
    return reap(p)


# === scenarios ===

def scenario_check(r):
    d = os.path.join(WORK, f"check-{r}")
    config = write_config(d)
    err = os.path.join(d, "stderr")
    t0 = time.monotonic()
    p = spawn([AUDITRAIL, "check", "--config", config, "--input", WORKLOAD],
              stdout=subprocess.DEVNULL, stderr=open(err, "w"))
    code, ru = reap(p)
    wall = time.monotonic() - t0
    summary = {}
    for line in open(err):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict) and "lines" in v and "audit" in v:
            summary = v
    assert code == 0, f"check exited {code}"
    assert summary.get("lines") == workload["lines"], summary
    assert summary.get("audit") == workload["audit"], summary
    cpu = ru.ru_utime + ru.ru_stime
    return {
        "wall_s": wall, "cpu_s": cpu, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
        "lines_per_s": LINES / wall, "mb_per_s": workload["bytes"] / wall / 1e6,
        "lines_per_cpu_s": LINES / cpu, "peak_rss_mib": ru.ru_maxrss * 1024 / MIB,
        "summary": summary,
    }


def scenario_run(r):
    d = os.path.join(WORK, f"run-{r}")
    broker = Broker(f"run-{r}")
    try:
        config = write_config(d, broker, checkpoint_interval="100ms")
        log_path = os.path.join(d, "logs", "0.log")
        if os.path.exists(log_path):
            os.unlink(log_path)
        os.link(WORKLOAD, log_path)  # same inode: still in the page cache
        t0 = time.monotonic()
        lo0 = loopback_bytes()
        p = start_auditrail(config, f"run-{r}")
        done = wait_for_checkpoint(d, log_path, p, timeout=max(300, LINES / 2000))
        wall = time.monotonic() - t0
        wire = loopback_bytes() - lo0
        code, ru = terminate(p)
        assert done, f"run: checkpoint never reached the end (exit {code}); see {WORK}/run-{r}.auditrail.log"
        got = consumed(consume(broker, expect=workload["audit"]))
        cpu = ru.ru_utime + ru.ru_stime
        return {
            "wall_s": wall, "cpu_s": cpu, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
            "exit": code, "lines_per_s": LINES / wall, "lines_per_cpu_s": LINES / cpu,
            "records_per_s": workload["audit"] / wall,
            "peak_rss_mib": ru.ru_maxrss * 1024 / MIB,
            "compression": COMPRESSION or "lz4", "wire_mb": wire / 1e6,
            "delivered_distinct": got["distinct"], "delivered_messages": got["messages"],
            "lost": workload["audit"] - got["distinct"],
        }
    finally:
        broker.stop()


def live_run(name, duration, pause_at=None, pause_for=0.0, outage="stop", rate=RATE):
    """auditrail tails a file that a writer appends to at RATE bytes/s for `duration` s; a
    consumer reads the topics concurrently. With `pause_at`, the broker is out that many
    seconds into the load, for `pause_for` seconds: stopped by SIGSTOP and resumed by SIGCONT
    (`outage="stop"`: connections stay open, nothing answers), or killed by SIGKILL and
    started again on the same port and storage (`outage="kill"`: connections reset, new ones
    refused; the broker keeps its topics in SQLite so that what it acknowledged survives)."""
    d = os.path.join(WORK, name)
    broker = Broker(name, persistent=outage == "kill")
    try:
        config = write_config(d, broker)
        log_path = os.path.join(d, "logs", "0.log")
        # The file exists (one ordinary line) before auditrail starts, as a pod's log does.
        subprocess.run([GEN, "--lines", "1", "--audit-percent", "0", "--output", log_path],
                       check=True, stderr=subprocess.DEVNULL)
        expect_file = os.path.join(d, "expect")
        # The consumer gives up after `idle_ms` without a message: longer than the outage, in
        # which it gets none (a killed broker resets its connection; it reconnects).
        consumer = consume(broker, expect_file=expect_file, latency=True,
                           idle_ms=int(15000 + 1000 * pause_for))
        p = start_auditrail(config, name)
        sampler = Sampler(p.pid)
        sampler.start()
        time.sleep(3)  # startup: connect, check/create topics
        writer_err = os.path.join(d, "writer.json")
        cpu0 = proc_sample(p.pid)[0]
        t0 = time.monotonic()
        writer = spawn([GEN, "--rate", str(rate), "--duration", str(duration), "--seed", str(SEED + 1),
                        "--output", log_path], stderr=open(writer_err, "w"))
        paused = None
        if pause_at is not None:
            time.sleep(pause_at)
            threads0 = thread_cpu(p.pid)
            if outage == "kill":
                broker.kill()
            else:
                os.kill(broker.proc.pid, signal.SIGSTOP)
            paused = time.monotonic()
            time.sleep(pause_for)
            threads1 = thread_cpu(p.pid)
            resumed_cpu_at = time.monotonic()
            if outage == "kill":
                broker.start()
            else:
                os.kill(broker.proc.pid, signal.SIGCONT)
            resumed = time.monotonic()
        writer.wait()
        t1 = time.monotonic()
        cpu1, rss_end, hwm_end = proc_sample(p.pid)
        written = json.loads(open(writer_err).read().strip().splitlines()[-1])
        with open(expect_file + ".tmp", "w") as f:
            f.write(str(written["audit"]))
        os.rename(expect_file + ".tmp", expect_file)
        caught_up = wait_for_checkpoint(d, log_path, p, timeout=300)
        t2 = time.monotonic()
        sampler.stop_flag = True
        code, ru = terminate(p)
        assert caught_up, f"{name}: checkpoint never reached the end; see {WORK}/{name}.auditrail.log"
        got = consumed(consumer)
        res = {
            "seconds": t1 - t0, "written": written, "exit": code,
            "cpu_share_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            "cpu_s_total": ru.ru_utime + ru.ru_stime,
            "peak_rss_mib": hwm_end / MIB, "steady_rss_mib": rss_end / MIB,
            "peak_rss_lifetime_mib": ru.ru_maxrss * 1024 / MIB,
            "catch_up_s": t2 - t1,
            "delivered_distinct": got["distinct"], "delivered_messages": got["messages"],
            "lost": written["audit"] - got["distinct"],
            "latency_ms": got.get("latency_ms"), "read_latency_ms": got.get("read_latency_ms"),
            "timestamp_type": got.get("timestamp_type"),
        }
        if paused is not None:
            res["pause_peak_rss_mib"] = sampler.max_rss(paused, resumed) / MIB
            res["pause_cpu_share_pct"] = sampler.cpu_share(paused, resumed)
            # Per phase: the load before the outage, the outage, the load after it.
            res["before_cpu_share_pct"] = sampler.cpu_share(t0, paused)
            res["after_cpu_share_pct"] = sampler.cpu_share(resumed, t1)
            res["pause_threads_pct"] = thread_share(threads0, threads1, resumed_cpu_at - paused)
            res["paused_s"] = resumed - paused
            res["outage"] = outage
        return res
    finally:
        broker.stop()


def scenario_steady(r):
    return live_run(f"steady-{r}", STEADY)


def scenario_pause(r):
    return live_run(f"pause-{r}", PAUSE_LEAD + PAUSE + PAUSE_TAIL, pause_at=PAUSE_LEAD, pause_for=PAUSE)


def threads_sample(pid):
    """{tid: (name, voluntary context switches, ns on a CPU)} of every thread of a live
    process (the CPU time from schedstat: finer than the 10 ms ticks of /proc/PID/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        out[tid] = (name, int(line.split()[1]), ns)
        except (OSError, IndexError, ValueError):
            pass  # the thread ended
    return out


def http_status(port, path, timeout=1.0):
    """The status code of GET `path` on 127.0.0.1:`port`, or None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64).decode("latin-1")
        return int(head.split(" ")[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_ready(port, proc, timeout, poll=0.002):
    """Until /readyz answers 200; returns the moment it did (None if it never did)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(port, "/readyz") == 200:
            return time.monotonic()
        if proc.poll() is not None:
            return None
        time.sleep(poll)
    return None


def idle_run(name, kafka):
    """auditrail on a CRI file that nothing writes to (a quiet pod): once everything in it is
    shipped (acknowledged, with Kafka) and IDLE_SETTLE s have passed, what it costs over IDLE s."""
    d = os.path.join(WORK, name)
    broker = Broker(name) if kafka else None
    try:
        port = free_port()
        config = write_config(d, broker, metrics_port=port)
        log_path = os.path.join(d, "logs", "0.log")
        # A few lines (about 10 audit records) shipped before the quiet starts, as in a pod.
        subprocess.run([GEN, "--lines", "100", "--seed", str(SEED + 2), "--output", log_path],
                       check=True, stderr=subprocess.DEVNULL)
        p = start_auditrail(config, name)
        assert wait_ready(port, p, 60), f"{name}: never ready; see {WORK}/{name}.auditrail.log"
        assert wait_for_checkpoint(d, log_path, p, 60), f"{name}: the file was never shipped"
        time.sleep(IDLE_SETTLE)
        cpu0 = proc_sample(p.pid)[0]
        th0 = threads_sample(p.pid)
        t0 = time.monotonic()
        time.sleep(IDLE)
        cpu1, rss, hwm = proc_sample(p.pid)
        anon, file = rss_split(p.pid)
        th1 = threads_sample(p.pid)
        t1 = time.monotonic()
        code, ru = terminate(p)
        wall = t1 - t0
        per_thread, cpu_thread = {}, {}
        for tid, (tname, n, ns) in th1.items():
            _, n0, ns0 = th0.get(tid, (tname, 0, 0))
            per_thread[tname] = per_thread.get(tname, 0) + n - n0
            cpu_thread[tname] = cpu_thread.get(tname, 0) + ns - ns0
        wakeups = sum(per_thread.values())
        return {
            "seconds": wall, "exit": code, "cpu_s": cpu1 - cpu0,
            "cpu_share_pct": 100 * (cpu1 - cpu0) / wall,
            "rss_mib": rss / MIB, "peak_rss_mib": hwm / MIB, "threads": len(th1),
            "rss_anon_mib": anon / MIB, "rss_file_mib": file / MIB,
            "wakeups_per_s": wakeups / wall,
            "wakeups_per_s_by_thread": {k: round(v / wall, 2) for k, v in sorted(per_thread.items())},
            # Threads alive at both ends only (one that ended in between is not counted).
            "cpu_share_pct_schedstat": 100 * sum(cpu_thread.values()) / 1e9 / wall,
            "cpu_pct_by_thread": {k: round(100 * v / 1e9 / wall, 4) for k, v in sorted(cpu_thread.items())},
        }
    finally:
        if broker:
            broker.stop()


def scenario_idle(r):
    return {"kafka": idle_run(f"idle-kafka-{r}", True), "stdout": idle_run(f"idle-stdout-{r}", False)}


def scenario_startup(r):
    """From exec to /readyz answering 200, with the stdout output (no Kafka)."""
    d = os.path.join(WORK, f"startup-{r}")
    port = free_port()
    config = write_config(d, metrics_port=port)
    log_path = os.path.join(d, "logs", "0.log")
    subprocess.run([GEN, "--lines", "1", "--audit-percent", "0", "--output", log_path],
                   check=True, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    p = start_auditrail(config, f"startup-{r}")
    ready = wait_ready(port, p, 30)
    terminate(p)
    assert ready is not None, f"startup: never ready; see {WORK}/startup-{r}.auditrail.log"
    return {"ready_ms": 1000 * (ready - t0)}


def binary_size():
    """Bytes of the auditrail binary as built, and of a stripped copy."""
    copy = os.path.join(WORK, "auditrail.stripped")
    subprocess.run(["strip", "-o", copy, AUDITRAIL], check=True)
    return {"bytes": os.path.getsize(AUDITRAIL), "stripped_bytes": os.path.getsize(copy)}
def scenario_kill(r):
    return live_run(f"kill-{r}", PAUSE_LEAD + PAUSE + PAUSE_TAIL, pause_at=PAUSE_LEAD, pause_for=PAUSE,
                    outage="kill", rate=KILL_RATE)


# === main ===

def median(results, key, sub=None):
    vals = [(x[key][sub] if sub else x[key]) for x in results if x.get(key) is not None]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else float("nan")


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    scenarios = {"check": scenario_check, "run": scenario_run, "steady": scenario_steady, "pause": scenario_pause,
                 "kill": scenario_kill, "idle": scenario_idle, "startup": scenario_startup}
    results = {s: [] for s in SCENARIOS}
    size = binary_size()
    for s in SCENARIOS:
        for r in range(RUNS):
            log(f"{s}: run {r + 1}/{RUNS}")
            res = scenarios[s](r)
            results[s].append(res)
            log(f"{s}: " + json.dumps({k: v for k, v in res.items() if k != "summary"}))
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"
    machine = {"nproc": os.cpu_count(), "cpu": cpu_model(), "kernel": os.uname().release,
               "revision": rev, "loadavg_at_end": os.getloadavg()}
    json.dump({"machine": machine, "workload": workload, "runs": RUNS,
               "settings": {"steady_seconds": STEADY, "rate": RATE, "pause_seconds": PAUSE,
                            "idle_seconds": IDLE, "idle_settle": IDLE_SETTLE},
               "binary": size,
               "results": results}, open(OUT, "w"), indent=1)

    rows = []
    def row(scenario, metric, value, fmt, target=""):
        rows.append((scenario, metric, fmt.format(value), target))
    if "check" in results:
        c = results["check"]
        row("check → /dev/null", "input lines/s", median(c, "lines_per_s"), "{:,.0f}")
        row("", "MB/s", median(c, "mb_per_s"), "{:,.1f}")
        row("", "input lines per CPU-second", median(c, "lines_per_cpu_s"), "{:,.0f}", "≥ 6,000,000")
        row("", "peak RSS (MiB)", median(c, "peak_rss_mib"), "{:.1f}")
    if "run" in results:
        c = results["run"]
        row("run → Kafka (acks=all)", "input lines/s", median(c, "lines_per_s"), "{:,.0f}")
        row("", "input lines per CPU-second", median(c, "lines_per_cpu_s"), "{:,.0f}", "≥ 2,000,000")
        row("", "records delivered/s", median(c, "records_per_s"), "{:,.0f}")
        row("", f"MB sent over loopback ({c[0].get('compression', 'lz4')})", median(c, "wire_mb"), "{:.1f}")
        if INTEGRITY:
            row("", "integrity", INTEGRITY, "{}")
        row("", "peak RSS (MiB)", median(c, "peak_rss_mib"), "{:.1f}")
        row("", "records lost (max over runs)", max(x["lost"] for x in c), "{:d}", "0")
    if "steady" in results:
        c = results["steady"]
        row(f"steady {RATE / 1e6:g} MB/s", "CPU, % of one core", median(c, "cpu_share_pct"), "{:.1f}", "≤ 2.5%")
        row("", "peak RSS (MiB)", median(c, "peak_rss_mib"), "{:.1f}", "≤ 16 MiB")
        row("", "steady RSS (MiB)", median(c, "steady_rss_mib"), "{:.1f}")
        row("", "latency p50 (ms)", median(c, "latency_ms", "p50"), "{:.0f}")
        row("", "latency p99 (ms)", median(c, "latency_ms", "p99"), "{:.0f}", "≤ 250 ms")
        row("", "time to read p50/p99 (ms)", f'{median(c, "read_latency_ms", "p50"):.1f} / {median(c, "read_latency_ms", "p99"):.1f}', "{}")
        row("", "records lost (max over runs)", max(x["lost"] for x in c), "{:d}", "0")
    for key, title in (("pause", f"broker paused (SIGSTOP) {PAUSE:g} s"), ("kill", f"broker killed (SIGKILL) {PAUSE:g} s at {KILL_RATE / 1e6:g} MB/s")):
        if key not in results:
            continue
        c = results[key]
        row(title, "peak RSS during outage (MiB)", median(c, "pause_peak_rss_mib"), "{:.1f}", "< 48 MiB")
        row("", "peak RSS, whole run (MiB)", median(c, "peak_rss_mib"), "{:.1f}", "< 48 MiB")
        row("", "CPU before / during / after, % of one core",
            f'{median(c, "before_cpu_share_pct"):.1f} / {median(c, "pause_cpu_share_pct"):.1f} / {median(c, "after_cpu_share_pct"):.1f}',
            "{}", "during ≤ 5%")
        row("", "catch-up after load ends (s)", median(c, "catch_up_s"), "{:.1f}")
        if key == "kill":
            # Every record was acknowledged (the checkpoint reached the end of the file), but
            # tansu's SQLite storage does not keep all it acknowledged across a SIGKILL, and
            # its slow fetches can outlast the consumer: a count, not a loss (BENCHMARKS.md).
            row("", "records not consumed back (max over runs)", max(x["lost"] for x in c), "{:d}")
        else:
            row("", "records lost (max over runs)", max(x["lost"] for x in c), "{:d}", "0")

    if "idle" in results:
        for kind in ("kafka", "stdout"):
            c = [x[kind] for x in results["idle"]]
            label = f"idle {IDLE:g} s, " + ("Kafka (connected)" if kind == "kafka" else "stdout only")
            row(label, "CPU, % of one core", median(c, "cpu_share_pct"), "{:.3f}", "≤ 0.05%" if kind == "kafka" else "")
            row("", "CPU, % of one core (schedstat, ns)", median(c, "cpu_share_pct_schedstat"), "{:.3f}")
            row("", "RSS (MiB)", median(c, "rss_mib"), "{:.1f}", "≤ 12 MiB" if kind == "kafka" else "")
            row("", "of it private (RssAnon) / mapped files (RssFile)",
                f"{median(c, 'rss_anon_mib'):.1f} / {median(c, 'rss_file_mib'):.1f}", "{}")
            row("", "threads", median(c, "threads"), "{:.0f}")
            row("", "wake-ups/s (voluntary context switches)", median(c, "wakeups_per_s"), "{:.1f}")
    if "startup" in results:
        row("startup (stdout output)", "exec to /readyz 200 (ms)", median(results["startup"], "ready_ms"), "{:.1f}", "< 100 ms")
    row("binary", "stripped size (MB)", size["stripped_bytes"] / 1e6, "{:.1f}")

    print()
    print(f"auditrail benchmark — {machine['nproc']} cores, {machine['cpu']}, kernel {machine['kernel']}, revision {rev}")
    print(f"workload: {workload['lines']:,} lines, {workload['bytes'] / 1e6:.1f} MB, {workload['audit']:,} audit records (seed {SEED}); "
          f"median of {RUNS} run(s); load average at end {machine['loadavg_at_end'][0]:.2f}")
    w = [max(len(x[i]) for x in rows + [("scenario", "metric", "value", "target")]) for i in range(4)]
    print(f"| {'scenario':<{w[0]}} | {'metric':<{w[1]}} | {'value':>{w[2]}} | {'target':<{w[3]}} |")
    print(f"|{'-' * (w[0] + 2)}|{'-' * (w[1] + 2)}|{'-' * (w[2] + 1)}:|{'-' * (w[3] + 2)}|")
    for s, m, v, t in rows:
        print(f"| {s:<{w[0]}} | {m:<{w[1]}} | {v:>{w[2]}} | {t:<{w[3]}} |")
    print(f"\nraw figures: {OUT}")


try:
    main()
finally:
    cleanup()
PY

python3 -u "$work/bench.py"
