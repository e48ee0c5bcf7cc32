"""`dalle-mini train` under torchrun: two real CPU processes (gloo), launched as a user would launch them.

    python -m torch.distributed.run --nproc_per_node 2 --standalone -m dalle_mini_core.cli train clip ...

The processes run a small probe around the CLI's own `main` (written to the test's temporary folder):
it records, per rank, every write the process makes under the output folder (Python's audit hooks:
open for writing, mkdir, rename/replace, remove, rmtree), the rows of every batch shard the training
loop hands the model, the global batch they were cut from, and a checksum of the trained weights.
The test then checks what the code promises (train.py, stages.py): the command succeeds; rank 0 writes
the weights, the report and the sha256 manifest; rank 1 writes nothing and prints nothing; each rank
trains on its own contiguous half of every global batch; and DDP leaves both ranks with the same weights.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent('''
    import hashlib, json, os, sys

    out, records, argv = os.path.realpath(sys.argv[1]), sys.argv[2], sys.argv[3:]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    record = {"rank": rank, "world": world, "writes": [], "shards": []}
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def under_out(path):
        if isinstance(path, int):
            return None
        p = os.path.realpath(os.fsdecode(path))
        return p if p == out or p.startswith(out + os.sep) else None

    def audit(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
            hit = under_out(path) if writing else None
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
            hit = under_out(args[0])
        elif event == "os.rename":
            hit = under_out(args[0]) or under_out(args[1])
        else:
            return
        if hit:
            record["writes"].append([event, hit])

    sys.addaudithook(audit)

    import torch
    import dalle_mini_core.train as T

    real_batches, real_train = T._batches, T.train

    def recording_batches(data, rank_, world_):
        get = real_batches(data, rank_, world_)

        def get_and_record(step):
            shard = get(step)
            full = data(step)  # the batch functions are pure functions of the step
            record["shards"].append({"step": step, "rows": shard["tokens"].tolist(), "full": full["tokens"].tolist()})
            return shard

        return get_and_record

    def recording_train(model, data, config, **kw):
        result = real_train(model, data, config, **kw)
        h = hashlib.sha256()
        for name, t in sorted(result.model.state_dict().items()):
            h.update(name.encode() + t.detach().cpu().float().numpy().tobytes())
        record["weights_sha256"], record["steps"] = h.hexdigest(), result.step
        return result

    T._batches, T.train = recording_batches, recording_train

    from dalle_mini_core.cli import main

    rc = main(argv)
    print(f"probe: rank {rank} of {world}: rc {rc}, {len(record['shards'])} shards, "
          f"{len(record['writes'])} writes under the output folder", file=sys.stderr, flush=True)
    with open(os.path.join(records, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)
    sys.exit(rc)
''')


def test_train_under_torchrun_on_two_cpu_processes(tmp_path):
    pytest.importorskip("torch.distributed.run")
    out, records = tmp_path / "weights", tmp_path / "records"
    records.mkdir()
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    steps = 2
    env = {**os.environ, "DALLE_MINI_DEVICE": "cpu", "DALLE_MINI_SMOKE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("DALLE_MINI_MODE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(probe), str(out), str(records),
           "train", "clip", "--dataset", "emoji", "--mode", "smoke", "--out", str(out), "--steps", str(steps)]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    said = run.stdout + run.stderr
    assert run.returncode == 0, said[-3000:]

    # rank 0 wrote the weights, the report and the manifest, and they check out
    from dalle_mini_core.weights import verify_manifest

    names = ["emoji_clip.safetensors", "emoji_clip.json", "train_report.json"]
    assert all((out / n).is_file() for n in names + ["MANIFEST.json"])
    verify_manifest(out / "MANIFEST.json", files=names)
    report = json.loads((out / "train_report.json").read_text())
    assert report["stages"]["clip"]["steps"] == steps

    # both ranks ran; rank 0 did every write under OUT, rank 1 none; only rank 0 logged
    r0, r1 = (json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["rank"], r0["world"], r1["rank"], r1["world"]) == (0, 2, 1, 2)
    assert "probe: rank 0 of 2: rc 0" in said and "probe: rank 1 of 2: rc 0" in said
    assert r0["writes"], "rank 0 wrote nothing under the output folder"
    assert r1["writes"] == [], f"rank 1 wrote under the output folder: {r1['writes'][:5]}"
    assert said.count("[clip] done: 2 steps") == 1 and said.count("dalle-mini train: emoji_clip in") == 1

    # every step: each rank trained on its own contiguous half of the same global batch
    assert [s["step"] for s in r0["shards"]] == [s["step"] for s in r1["shards"]] == list(range(steps))
    for s0, s1 in zip(r0["shards"], r1["shards"]):
        assert s0["full"] == s1["full"]  # the same global batch on both ranks
        half = len(s0["full"]) // 2
        assert s0["rows"] == s0["full"][:half] and s1["rows"] == s1["full"][half:]
        assert s0["rows"] != s1["rows"]

    # DDP averaged the gradients: both replicas end with the same weights
    assert r0["steps"] == r1["steps"] == steps
    assert r0["weights_sha256"] == r1["weights_sha256"]
