"""The bench's results: machine facts, the table (stdout and Markdown), the JSON and a
PNG of the latency distributions, under bench/results/<date>.*"""
import json
import os
import platform
import subprocess
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE = os.environ.get("BATON_CACHE", os.path.expanduser("~/.cache/baton"))
COMPONENTS = {
    "baton": ["baton-controller", "baton-runner"],
    "batch": ["system:serviceaccount:kube-system:job-controller"],
    "tekton": ["tekton-controller"],
}
SHARED = ["system:kube-scheduler", "kwok"]


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine():
    mem = next(line for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    versions = {}
    for line in open(os.path.join(REPO, "hack/cluster/versions.env")):
        if line.startswith(("K8S_VERSION", "ETCD_VERSION")):
            versions[line.split("=")[0]] = line.split(":-")[1].split("}")[0]
    for line in open(os.path.join(REPO, "hack/bench/versions.env")):
        if line.startswith(("KWOK_VERSION", "TEKTON_VERSION")):
            versions[line.split("=")[0]] = line.split(":-")[1].split("}")[0]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "?")
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_total": mem.split(":")[1].strip(),
            "kernel": platform.release(), "python": platform.python_version(),
            "baton_commit": sh("git", "-C", REPO, "rev-parse", "--short", "HEAD"),
            # The binary that ran: BATON_BIN when set (then the commit is only the tree's).
            "baton_bin": os.environ.get("BATON_BIN", ""),
            "baton_version": sh(os.environ.get("BATON_BIN")
                                or os.path.join(REPO, "target/release/baton"), "--version"),
            **versions}


def per_job(run, users):
    return sum(run["calls"]["by_user"].get(u, 0) for u in users) / max(1, run["n"])


def rows(out):
    rs = []
    for r in out["runs"]:
        rs.append([r["system"], r["n"], "all" if not r["rate"] else f"{r['rate']:g}/s", r["qps"],
                   r["rep"], f"{r['done']}/{r['n']}", f"{r['jobs_per_min']:.0f}",
                   f"{r['p50_s']:.3f}", f"{r['p99_s']:.3f}",
                   f"{per_job(r, COMPONENTS[r['system']]):.1f}", f"{per_job(r, SHARED):.1f}",
                   r["duplicates"]])
    return rs


HEAD = ["system", "jobs", "created", "QPS", "rep", "done", "jobs/min", "p50 s", "p99 s",
        "API req/job", "shared req/job", "dups"]


def md_table(head, body):
    lines = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in body]
    return "\n".join(lines)


def top_calls(out, system, k=12):
    """Audit counts by user, verb and resource, per job, summed over the system's runs."""
    total, n = {}, 0
    for r in out["runs"]:
        if r["system"] != system:
            continue
        n += r["n"]
        for key, c in r["calls"]["by_verb"].items():
            if key.split(" ")[0] in COMPONENTS[system]:
                total[key] = total.get(key, 0) + c
    top = sorted(total.items(), key=lambda kv: -kv[1])[:k]
    return [[key, f"{c / max(1, n):.2f}"] for key, c in top]


def plot(out, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = sorted({(r["n"], r["rate"], r["qps"]) for r in out["runs"]})
    if not cases:
        return  # no throughput runs (BENCH_SIZES empty): no latencies to plot
    fig, axes = plt.subplots(1, len(cases), figsize=(5 * len(cases), 4), squeeze=False)
    for ax, (n, rate, qps) in zip(axes[0], cases):
        for system in out["config"]["systems"]:
            lat = sorted(x for r in out["runs"] if (r["n"], r["rate"], r["qps"], r["system"])
                         == (n, rate, qps, system) for x in r["latencies"])
            if lat:
                ax.plot(lat, [i / len(lat) for i in range(len(lat))], label=system)
        ax.set_xscale("log")
        ax.set_title(f"{n} jobs, {'all at once' if not rate else f'{rate:g}/s'}, {qps} QPS")
        ax.set_xlabel("Job created → step pod created (s)")
        ax.set_ylabel("fraction of jobs")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write(out):
    out["finished"] = time.time()
    date = time.strftime("%Y-%m-%d", time.gmtime(out["started"]))
    base = os.path.join(os.environ.get("BENCH_OUT", os.path.join(REPO, "bench", "results")), date)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    slim = dict(out, runs=[{k: v for k, v in r.items() if k != "latencies"} for r in out["runs"]])
    with open(base + ".json", "w") as f:
        json.dump(slim, f, indent=1, sort_keys=True)
    plot(out, base + ".png")
    table = md_table(HEAD, rows(out))
    print(table)
    m, c = out["machine"], out["config"]
    md = [f"# Bench results {date}", "",
          f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_total']} memory, kernel {m['kernel']}; "
          f"Kubernetes {m.get('K8S_VERSION')}, etcd {m.get('ETCD_VERSION')}, KWOK {m.get('KWOK_VERSION')}, "
          f"Tekton Pipelines {m.get('TEKTON_VERSION')}, {m['baton_version']} (commit {m['baton_commit']}"
          f"{', binary ' + m['baton_bin'] if m.get('baton_bin') else ''}).",
          "", f"Settings: {json.dumps(c)}", "",
          "Latency is Job created → step pod created, both seen by one observer's watches. "
          "API req/job counts the system's own components in the API server's audit log "
          "(Baton: controller + runners; batch/v1: job-controller; Tekton: its controller) "
          "during the run; shared req/job is kube-scheduler + KWOK (same work for all).", "",
          table, ""] + ([f"![latency distributions]({date}.png)", ""] if out["runs"] else [])
    for system in c["systems"]:
        md += [f"Top API requests per job, {system}:", "", md_table(["user verb resource", "per job"],
                                                                     top_calls(out, system)), ""]
    if out["memory"]:
        md += ["Controller memory and CPU (fresh controller; finished + running retained):", "",
               md_table(["system", "finished", "running", "peak RSS MiB", "RSS MiB", "CPU s",
                         "idle CPU %"],
                        [[x["system"], x["finished"], x["running"], f"{x['peak_rss_mib']:.1f}",
                          f"{x['rss_mib']:.1f}", f"{x['cpu_s']:.1f}", f"{x['idle_cpu_pct']:.1f}"]
                         for x in out["memory"]]), ""]
        restarted = [x for x in out["memory"] if "restarted" in x]
        if restarted:
            md += ["The same controller restarted with those Jobs retained (a fresh process: "
                   "its peak while it lists and resyncs them, and what it holds a minute later):",
                   "", md_table(["system", "peak RSS MiB", "RSS MiB", "anon / file MiB", "CPU s",
                                 "idle CPU %"],
                                [[x["system"], f"{r['peak_rss_mib']:.1f}", f"{r['rss_mib']:.1f}",
                                  f"{r.get('RssAnon', '?')} / {r.get('RssFile', '?')}",
                                  f"{r['cpu_s']:.1f}", f"{r['idle_cpu_pct']:.1f}"]
                                 for x in restarted for r in [x["restarted"]]]), ""]
        for x in out["memory"]:
            for when, h in (("after the phase", x.get("heap_mib")),
                            ("restarted", x.get("restarted", {}).get("heap_mib"))):
                if h:
                    md += [f"{x['system']} heap {when}, jemalloc's counts (MiB): "
                           + ", ".join(f"{k} {v}" for k, v in h.items()) + ".", ""]
    if "idle" in out:
        i = out["idle"]
        md += [f"Baton controller idle CPU: {i['cpu_pct_empty']:.1f} % with no Jobs, "
               f"{i['cpu_pct_queued']:.1f} % with {i['queued']} queued Jobs no runner matches.", ""]
    if "restart" in out:
        r = out["restart"]
        md += [f"Restart: {r['jobs']} running Jobs, controller and runners SIGKILLed, their step "
               f"pods ended meanwhile; after the restart {r['resumed']}/{r['jobs']} Jobs finished "
               f"within {r['resume_s']:.1f} s of the controller's start (it and the runners "
               f"restarted at once); duplicate step pods: "
               f"{r['duplicates']}.", ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(md))
    print(f"results: {base}.md")
