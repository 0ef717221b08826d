#!/usr/bin/env python3
"""The bench driver (`make bench` runs it after hack/bench/up.sh): the same one-step
workload through Baton, batch/v1 Jobs and Tekton TaskRuns, systems interleaved, then
Baton's memory, idle CPU and restart figures. Writes bench/results/<date>.{json,md,png}
(report.py). Settings: see hack/bench/README.md."""
import calendar
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from kube import STATE, Kube, Watch, pid_of, proc, rss_parts
import report

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = os.environ.get
SIZES = [int(x) for x in ENV("BENCH_SIZES", "1000,5000").split(",") if x]  # "": none
RATES = [float(x) for x in ENV("BENCH_RATES", "10,0").split(",")]  # Jobs/s; 0: all at once
QPS_MODES = ENV("BENCH_QPS", "default,matched").split(",")
REPEAT = int(ENV("BENCH_REPEAT", "2"))
SYSTEMS = ENV("BENCH_SYSTEMS", "baton,batch,tekton").split(",")
DELAY = ENV("BENCH_DELAY", "5s")            # the Stage's completion delay
MEM_FINISHED = int(ENV("BENCH_MEM_FINISHED", "10000"))
MEM_RUNNING = int(ENV("BENCH_MEM_RUNNING", "1000"))
MEM_SYSTEMS = [s for s in ENV("BENCH_MEM_SYSTEMS", "baton,tekton").split(",") if s]
RESTART_JOBS = int(ENV("BENCH_RESTART_JOBS", "1000"))
IDLE_QUEUE = int(ENV("BENCH_IDLE_QUEUE", "2000"))
RUN_TIMEOUT = float(ENV("BENCH_RUN_TIMEOUT", "1800"))
IMAGE = "bench.invalid/step:1"   # never pulled: KWOK runs no containers
COMPLETE = "bench.baton.dev/complete"
DELAY_KEY = "bench.baton.dev/delay"


def pod_meta(complete, delay):
    labels = {COMPLETE: "true"} if complete else {}
    return labels, {DELAY_KEY: delay}


def baton_job(name, complete=True, delay=DELAY, pool="bench"):
    labels, ann = pod_meta(complete, delay)
    return {"apiVersion": "baton.dev/v1alpha1", "kind": "Job", "metadata": {"name": name},
            "spec": {"runnerSelector": {"matchLabels": {"pool": pool}},
                     "podTemplate": {"labels": labels, "annotations": ann},
                     "steps": [{"name": "s", "image": IMAGE}]}}


def batch_job(name, complete=True, delay=DELAY):
    labels, ann = pod_meta(complete, delay)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": labels, "annotations": ann},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "s", "image": IMAGE, "command": ["true"]}]}}}}


def taskrun(name, complete=True, delay=DELAY):
    labels, ann = pod_meta(complete, delay)
    return {"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
            "metadata": {"name": name, "labels": labels, "annotations": ann},
            "spec": {"taskSpec": {"steps": [{"name": "s", "image": IMAGE, "command": ["true"]}]}}}


def cond(obj, kind):
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == kind:
            return c.get("status")
    return None


def baton_done(o):
    p = o.get("status", {}).get("phase")
    return {"Succeeded": True, "Failed": False, "Cancelled": False}.get(p)


def batch_done(o):
    return True if cond(o, "Complete") == "True" else False if cond(o, "Failed") == "True" else None


def tekton_done(o):
    return {"True": True, "False": False}.get(cond(o, "Succeeded"))


KINDS = {
    "baton": ("/apis/baton.dev/v1alpha1/namespaces/{ns}/jobs", baton_job, baton_done,
              "baton.dev/job-name", ["baton-controller", "baton-runner"]),
    "batch": ("/apis/batch/v1/namespaces/{ns}/jobs", batch_job, batch_done,
              "batch.kubernetes.io/job-name", ["system:serviceaccount:kube-system:job-controller"]),
    "tekton": ("/apis/tekton.dev/v1/namespaces/{ns}/taskruns", taskrun, tekton_done,
               "tekton.dev/taskRun", ["tekton-controller"]),
}


class Observer:
    """One watch on the system's objects and one on its namespace's pods."""

    def __init__(self, kube, system):
        self.ns = f"bench-{system}"
        path, _, self.done_of, self.pod_label, _ = KINDS[system]
        self.path = path.format(ns=self.ns)
        self.pods_path = f"/api/v1/namespaces/{self.ns}/pods"
        self.lock = threading.Lock()
        self.added, self.done, self.pod_seen, self.pods, self.pod_done = {}, {}, {}, {}, set()
        rv = kube.req("GET", self.path + "?limit=1")["metadata"]["resourceVersion"]
        prv = kube.req("GET", self.pods_path + "?limit=1")["metadata"]["resourceVersion"]
        self.watches = [Watch(kube, self.path, rv, self.on_job),
                        Watch(kube, self.pods_path, prv, self.on_pod)]

    def on_job(self, typ, o, t):
        name = o["metadata"]["name"]
        with self.lock:
            self.added.setdefault(name, t)
            ok = self.done_of(o)
            if ok is not None and name not in self.done:
                self.done[name] = (t, ok)

    def on_pod(self, typ, o, t):
        job = (o["metadata"].get("labels") or {}).get(self.pod_label)
        if not job or typ == "DELETED":
            return
        with self.lock:
            self.pod_seen.setdefault(job, t)
            self.pods.setdefault(job, set()).add(o["metadata"]["name"])
            if o.get("status", {}).get("phase") == "Succeeded":
                self.pod_done.add(o["metadata"]["name"])

    def wait(self, what, n, timeout=RUN_TIMEOUT):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if len(getattr(self, what)) >= n:
                    return True
            time.sleep(0.2)
        print(f"  timed out: {what} {len(getattr(self, what))}/{n}", flush=True)
        return False

    def stop(self):
        for w in self.watches:
            w.stop()


def create_all(kube, obs, objs, rate):
    """Creates objs at `rate` per second (0: all at once, 32 in flight)."""
    t0 = time.time()
    with ThreadPoolExecutor(32) as pool:
        futures = []
        for i, o in enumerate(objs):
            if rate > 0:
                time.sleep(max(0.0, t0 + i / rate - time.time()))
            futures.append(pool.submit(kube.req, "POST", obs.path, o))
        for f in futures:
            f.result()
    return t0


def cleanup(kube, system):
    obs_path = KINDS[system][0].format(ns=f"bench-{system}")
    kube.req("DELETE", obs_path, {"propagationPolicy": "Background"})
    pods = f"/api/v1/namespaces/bench-{system}/pods"
    for _ in range(1800):
        if kube.count(obs_path) == 0 and kube.count(pods) == 0:
            return
        time.sleep(1)
    print(f"  cleanup of bench-{system} incomplete", flush=True)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def one_run(kube, audit, system, n, rate, qps, rep):
    print(f"run {system} n={n} rate={rate or 'all'} qps={qps} #{rep}", flush=True)
    obs = Observer(kube, system)
    make = KINDS[system][1]
    objs = [make(f"{system[0]}{rep}-{i:05d}") for i in range(n)]
    t0 = create_all(kube, obs, objs, rate)
    finished = obs.wait("done", n)
    t_end = max((t for t, _ in obs.done.values()), default=time.time())
    obs.stop()
    with obs.lock:
        lat = [obs.pod_seen[j] - obs.added[j] for j in obs.pod_seen if j in obs.added]
        dups = sum(len(p) - 1 for p in obs.pods.values())
        failed = sum(1 for _, ok in obs.done.values() if not ok)
        start = min(obs.added.values())
    wall = t_end - start
    calls = audit.window(min(t0, start), t_end + 1.0)
    r = {"system": system, "n": n, "rate": rate, "qps": qps, "rep": rep, "finished": finished,
         "done": len(obs.done), "failed": failed, "wall_s": wall,
         "jobs_per_min": len(obs.done) / wall * 60 if wall > 0 else None,
         "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99), "latencies": lat,
         "duplicates": dups, "calls": calls, "create_s": time.time() - t0}
    print(f"  {r['jobs_per_min']:.0f} jobs/min, p50 {r['p50_s']:.3f}s p99 {r['p99_s']:.3f}s, "
          f"dups {dups}, failed {failed}", flush=True)
    cleanup(kube, system)
    return r


class Audit:
    """Counts audit events (one per request) by component user in a time window."""

    def __init__(self):
        self.path = f"{STATE}/audit/audit.log"
        self.offset = 0  # windows come one after another: read on from the last one

    def window(self, t0, t1):
        time.sleep(2)  # the log is written as requests end
        by_user, by_verb = {}, {}
        with open(self.path) as f:
            f.seek(self.offset)
            while (line := f.readline()).endswith("\n"):
                self.offset = f.tell()
                ev = json.loads(line)
                ts = ev["requestReceivedTimestamp"]
                t = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + ts[19:-1])
                if not t0 <= t <= t1:
                    continue
                user = ev["user"]["username"]
                by_user[user] = by_user.get(user, 0) + 1
                ref = ev.get("objectRef") or {}
                key = f"{user} {ev['verb']} {ref.get('resource', ev.get('requestURI'))}"
                if ref.get("subresource"):
                    key += "/" + ref["subresource"]
                by_verb[key] = by_verb.get(key, 0) + 1
        return {"by_user": by_user, "by_verb": by_verb}


def ctl(*args):
    subprocess.run([f"{HERE}/ctl.sh", *args], check=True)


def settle(pid, seconds):
    _, _, c0 = proc(pid)
    time.sleep(seconds)
    _, _, c1 = proc(pid)
    return (c1 - c0) / seconds * 100


def memory(kube, system):
    """Peak RSS and CPU seconds of a fresh controller taking MEM_FINISHED Jobs to the
    end and holding MEM_RUNNING running ones."""
    print(f"memory {system}: {MEM_FINISHED} finished + {MEM_RUNNING} running", flush=True)
    name = {"baton": "baton@controller", "tekton": "tekton-controller"}[system]
    ctl("restart-" + system)
    pid = pid_of(name)
    _, hwm0, cpu0 = proc(pid)
    obs = Observer(kube, system)
    make = KINDS[system][1]
    create_all(kube, obs, [make(f"m{i:05d}", delay="1s") for i in range(MEM_FINISHED)], 0)
    obs.wait("done", MEM_FINISHED)
    create_all(kube, obs, [make(f"r{i:05d}", complete=False) for i in range(MEM_RUNNING)], 0)
    obs.wait("pod_seen", MEM_FINISHED + MEM_RUNNING)
    idle = settle(pid, 30)
    rss, hwm, cpu = proc(pid)
    obs.stop()
    r = {"system": system, "finished": len(obs.done), "running": MEM_RUNNING, "rss_mib": rss,
         "peak_rss_mib": hwm, "start_rss_mib": hwm0, "cpu_s": cpu - cpu0, "idle_cpu_pct": idle,
         **rss_parts(pid)}
    if system == "baton":
        r["heap_mib"] = baton_heap()
    print(f"  {r}", flush=True)
    r["restarted"] = restarted(system, name)
    if ENV("BENCH_MEM_KEEP", "0") != "1":
        cleanup(kube, system)
    return r


def restarted(system, name):
    """The controller restarted with the Jobs still there: a fresh process's peak while
    it lists and resyncs them, and what it holds a minute later (Baton's runners
    restart too and resume the running Jobs)."""
    ctl("restart-" + system)
    time.sleep(30)
    pid = pid_of(name)
    idle = settle(pid, 30)
    rss, hwm, cpu = proc(pid)
    r = {"rss_mib": rss, "peak_rss_mib": hwm, "cpu_s": cpu, "idle_cpu_pct": idle,
         **rss_parts(pid)}
    if system == "baton":
        r["heap_mib"] = baton_heap()
    print(f"  restarted: {r}", flush=True)
    return r


def baton_heap():
    """The controller's heap by jemalloc's counts (its /metrics), MiB by state."""
    port = ENV("BATON_PORT", "18480")  # run.sh passes lib.sh's
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as res:
        body = res.read().decode()
    heap = {}
    for line in body.splitlines():
        if line.startswith('baton_allocator_bytes{state="'):
            state = line.split('"')[1]
            heap[state] = round(int(line.rsplit(" ", 1)[1]) / 2**20, 1)
    return heap


def idle_queue(kube):
    """Baton's controller CPU with no Jobs, then with IDLE_QUEUE queued that no runner takes."""
    pid = pid_of("baton@controller")
    empty = settle(pid, 60)
    obs = Observer(kube, "baton")
    create_all(kube, obs, [baton_job(f"q{i:05d}", pool="nomatch") for i in range(IDLE_QUEUE)], 0)
    obs.wait("added", IDLE_QUEUE)
    time.sleep(30)
    queued = settle(pid, 60)
    obs.stop()
    cleanup(kube, "baton")
    r = {"queued": IDLE_QUEUE, "cpu_pct_empty": empty, "cpu_pct_queued": queued}
    print(f"idle: {r}", flush=True)
    return r


def restart(kube):
    """RESTART_JOBS Baton Jobs running; SIGKILL the controller and runners; their step
    pods end meanwhile; start both: time until every Job has resumed and finished."""
    print(f"restart: {RESTART_JOBS} running Jobs", flush=True)
    obs = Observer(kube, "baton")
    create_all(kube, obs, [baton_job(f"k{i:05d}", complete=False) for i in range(RESTART_JOBS)], 0)
    obs.wait("pod_seen", RESTART_JOBS)
    time.sleep(3)
    ctl("kill-baton")
    with obs.lock:
        pods = [p for ps in obs.pods.values() for p in ps]
    patch = {"metadata": {"labels": {COMPLETE: "true"}, "annotations": {DELAY_KEY: "0s"}}}
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda p: kube.req("PATCH", f"{obs.pods_path}/{p}", patch,
                                         "application/merge-patch+json"), pods))
    obs.wait("pod_done", len(pods))
    t0 = time.time()
    ctl("start-baton")  # returns once the controller is ready and the runners registered
    ok = obs.wait("done", RESTART_JOBS, timeout=600)
    t1 = max((t for t, _ in obs.done.values()), default=time.time())
    obs.stop()
    with obs.lock:
        dups = sum(len(p) - 1 for p in obs.pods.values())
    r = {"jobs": RESTART_JOBS, "all_resumed": ok, "resumed": len(obs.done),
         "resume_s": t1 - t0,
         "duplicates": dups}
    print(f"  {r}", flush=True)
    cleanup(kube, "baton")
    return r


def main():
    kube, audit = Kube(), Audit()
    out = {"config": {"sizes": SIZES, "rates": RATES, "qps": QPS_MODES, "repeat": REPEAT,
                      "systems": SYSTEMS, "delay": DELAY,
                      "matched_qps": int(ENV("BENCH_MATCHED_QPS", "50")),
                      "runners": int(ENV("BENCH_RUNNERS", "4")),
                      "runner_slots": int(ENV("BENCH_RUNNER_SLOTS", "1000")),
                      "mem_finished": MEM_FINISHED, "mem_running": MEM_RUNNING,
                      "restart_jobs": RESTART_JOBS, "idle_queue": IDLE_QUEUE},
           "machine": report.machine(), "runs": [], "memory": [], "started": time.time()}
    for qps in QPS_MODES:
        ctl("start", qps)
        for rep in range(REPEAT):
            for n in SIZES:
                for rate in RATES:
                    for system in SYSTEMS:
                        out["runs"].append(one_run(kube, audit, system, n, rate, qps, rep))
    for system in MEM_SYSTEMS:
        out["memory"].append(memory(kube, system))
    if IDLE_QUEUE:
        out["idle"] = idle_queue(kube)
    if RESTART_JOBS:
        out["restart"] = restart(kube)
    ctl("stop")
    report.write(out)


if __name__ == "__main__":
    sys.exit(main())
