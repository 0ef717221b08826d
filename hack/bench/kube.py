"""A small Kubernetes API client for the bench driver: JSON over HTTPS with the
bench-driver client certificate, watches on one thread each, /proc readings."""
import json
import os
import threading
import time

import urllib3

STATE = os.environ.get("BATON_BENCH_DIR", "/var/tmp/baton-bench")
API = "https://127.0.0.1:16443"


class Kube:
    def __init__(self, who="bench-driver"):
        pki = f"{STATE}/pki"
        self.http = urllib3.PoolManager(
            maxsize=64, cert_file=f"{pki}/{who}.crt", key_file=f"{pki}/{who}.key",
            ca_certs=f"{pki}/ca.crt", cert_reqs="CERT_REQUIRED", retries=False,
            timeout=urllib3.Timeout(connect=5, read=120))

    def req(self, method, path, body=None, ctype="application/json", ok404=False):
        for attempt in range(5):
            try:
                r = self.http.request(method, API + path, headers={"Content-Type": ctype},
                                      body=None if body is None else json.dumps(body))
            except urllib3.exceptions.HTTPError:
                if attempt == 4:
                    raise
                time.sleep(0.5)
                continue
            if r.status == 429 or r.status >= 500:
                time.sleep(0.5)
                continue
            if r.status == 404 and ok404:
                return None
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {r.data[:300]!r}")
            return json.loads(r.data) if r.data else None
        raise RuntimeError(f"{method} {path}: gave up after retries")

    def count(self, path):
        """Objects at a collection path (paged lists, only the names)."""
        n, cont = 0, ""
        while True:
            sep = "&" if "?" in path else "?"
            page = self.req("GET", f"{path}{sep}limit=500&continue={cont}")
            n += len(page["items"])
            cont = page["metadata"].get("continue", "")
            if not cont:
                return n


class Watch:
    """Watches a collection from `rv`, calling on_event(type, obj, t) with the
    observer's clock t (time.time() when the event line was read)."""

    def __init__(self, kube, path, rv, on_event):
        self.kube, self.path, self.rv, self.on_event = kube, path, rv, on_event
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            url = (f"{API}{self.path}?watch=1&allowWatchBookmarks=true"
                   f"&timeoutSeconds=300&resourceVersion={self.rv}")
            try:
                r = self.kube.http.request("GET", url, preload_content=False,
                                           timeout=urllib3.Timeout(connect=5, read=330))
                buf = b""
                for chunk in r.stream(65536):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        self._line(line, time.time())
                    if self.stopping:
                        break
                r.release_conn()
            except (urllib3.exceptions.HTTPError, OSError):
                time.sleep(0.2)

    def _line(self, line, t):
        ev = json.loads(line)
        obj = ev["object"]
        if ev["type"] == "ERROR":  # expired: carry on from now (counts stay: first-seen)
            self.rv = self.kube.req("GET", self.path + "?limit=1")["metadata"]["resourceVersion"]
            return
        self.rv = obj["metadata"]["resourceVersion"]
        if ev["type"] != "BOOKMARK":
            self.on_event(ev["type"], obj, t)

    def stop(self):
        self.stopping = True


def pid_of(name):
    try:
        return int(open(f"{STATE}/pids/{name}.pid").read().strip())
    except (OSError, ValueError):
        return None


def proc(pid):
    """rss_mib, hwm_mib, cpu_seconds of a live process."""
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024,
            (int(fields[11]) + int(fields[12])) / tick)


def rss_parts(pid):
    """A live process's resident memory by kind, MiB: anonymous (heap, stacks) and
    file-backed (the binary's and libraries' pages)."""
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return {k: round(int(status[k].split()[0]) / 1024, 1) for k in ("RssAnon", "RssFile")}
