#!/usr/bin/env python3
"""Writes one OCI image archive (an OCI image layout in a tar) from directories.

Each --layer directory becomes one uncompressed layer, in order. The archive is
reproducible: entries are sorted, owned by root and dated 0, so the same inputs
give the same digests. `ctr images import` loads it under the name given by --ref.

    oci_image.py OUT.tar --ref shoal.local/k8s/pause:3.10.1 \
        --entrypoint /pause --layer DIR [--layer DIR ...] [--env K=V ...]
"""

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_tar(root):
    """The layer's tar bytes: every file, directory and symlink under root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entries.append(os.path.join(dirpath, name))
        for path in sorted(entries):
            arcname = os.path.relpath(path, root)
            info = tar.gettarinfo(path, arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mode = 0o644
    out.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--ref", required=True, help="name:tag the image is imported as")
    p.add_argument("--layer", action="append", required=True, help="a layer's root directory")
    p.add_argument("--entrypoint", action="append", default=[], help="entrypoint argv, one per flag")
    p.add_argument("--cmd", action="append", default=[], help="default arguments, one per flag")
    p.add_argument("--env", action="append", default=[], help="K=V in the image config")
    a = p.parse_args()
    name, _, tag = a.ref.rpartition(":")
    if not name or not tag or "/" in tag:
        sys.exit(f"oci_image.py: --ref {a.ref!r} must be name:tag")
    for layer in a.layer:
        if not os.path.isdir(layer):
            sys.exit(f"oci_image.py: layer {layer!r} is not a directory")

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
        layers, diff_ids = [], []
        for layer in a.layer:
            data = layer_tar(layer)
            digest, size = blob(out, data)
            diff_ids.append(digest)
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                           "digest": digest, "size": size})
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": a.entrypoint or None,
                       "Cmd": a.cmd or None,
                       "Env": a.env or ["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        cdigest, csize = blob(out, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cdigest, "size": csize},
            "layers": layers,
        }
        mdigest, msize = blob(out, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest, "size": msize,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": a.ref,
                                "org.opencontainers.image.ref.name": tag},
            }],
        }
        for fname, doc in (("oci-layout", {"imageLayoutVersion": "1.0.0"}), ("index.json", index)):
            data = json.dumps(doc, sort_keys=True).encode()
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
