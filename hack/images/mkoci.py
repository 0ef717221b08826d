#!/usr/bin/env python3
"""Write a single-layer OCI image archive (oci-layout tar) without any container engine.

usage: mkoci.py --spec SPEC --ref REF --out ARCHIVE [--entrypoint JSON] [--cmd JSON]
                [--user U] [--env K=V ...] [--workdir DIR]

SPEC lines (paths inside the image are absolute, parents are created as 0755 dirs):
  file SRC DEST [MODE]      copy a host file (follows symlinks)
  dir DEST MODE             directory
  symlink TARGET DEST       symbolic link
  text DEST MODE            a file whose content is the following lines up to a line 'EOF'
The layer tar is deterministic (sorted entries, mtime 0, owner 0:0), so the same inputs
give the same digests. Prints the manifest digest on stdout.
"""
import argparse, hashlib, io, json, os, sys, tarfile

def parse_spec(path):
    entries = {}  # dest -> (kind, data, mode)
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].strip(); i += 1
        if not line or line.startswith("#"):
            continue
        f = line.split()
        kind = f[0]
        if kind == "file":
            src, dest = f[1], f[2]
            mode = int(f[3], 8) if len(f) > 3 else (os.stat(src).st_mode & 0o7777)
            entries[dest] = ("file", open(src, "rb").read(), mode)
        elif kind == "dir":
            entries[f[1]] = ("dir", None, int(f[2], 8))
        elif kind == "symlink":
            entries[f[2]] = ("symlink", f[1], 0o777)
        elif kind == "text":
            body = []
            while lines[i] != "EOF":
                body.append(lines[i]); i += 1
            i += 1
            entries[f[1]] = ("file", ("\n".join(body) + "\n").encode(), int(f[2], 8))
        else:
            sys.exit(f"mkoci: bad spec line: {line}")
    # implicit parent directories
    for dest in list(entries):
        p = os.path.dirname(dest)
        while p not in ("/", ""):
            entries.setdefault(p, ("dir", None, 0o755))
            p = os.path.dirname(p)
    return entries

def layer_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for dest in sorted(entries):
            kind, data, mode = entries[dest]
            ti = tarfile.TarInfo(dest.lstrip("/"))
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = 0, 0, 0, "", "", mode
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()

def blob(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True); ap.add_argument("--ref", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--entrypoint"); ap.add_argument("--cmd")
    ap.add_argument("--user", default=""); ap.add_argument("--workdir", default="/")
    ap.add_argument("--env", action="append", default=[])
    a = ap.parse_args()

    layer = layer_tar(parse_spec(a.spec))
    ldig = blob(layer)
    cfg = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env,
           "WorkingDir": a.workdir}
    if a.user: cfg["User"] = a.user
    if a.entrypoint: cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd: cfg["Cmd"] = json.loads(a.cmd)
    config = json.dumps({
        "created": "1970-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [ldig]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/images/mkoci.py"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": ldig, "size": len(layer)}],
    }, sort_keys=True, separators=(",", ":")).encode()
    mdig = blob(manifest)
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": mdig, "size": len(manifest),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": a.ref,
                                       "org.opencontainers.image.ref.name": a.ref}}],
    }, sort_keys=True, separators=(",", ":")).encode()

    files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
    for b in (layer, config, manifest):
        files.append(("blobs/sha256/" + blob(b)[7:], b))
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("blobs", "blobs/sha256"):
            ti = tarfile.TarInfo(d); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; ti.mtime = 0
            tf.addfile(ti)
        for name, data in files:
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644; ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
    os.replace(tmp, a.out)
    print(mdig)

if __name__ == "__main__":
    main()
