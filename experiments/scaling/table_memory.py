"""Peak memory of compressing one tall layer (a token table), whole against a block of rows at a time.

Each row of ``table_memory.csv`` is one fresh process: a random bfloat16 table of SmolLM2-1.7B's shape
(49,152 x 2,048) and statistics of random inputs are made, the peak resident set is reset (``VmHWM``),
the layer is compressed with ``compress_layer`` and the peak above the resident set before it is recorded,
with the wall time and whether the stored tensors equal the whole layer's (checked in the blocked run
against a digest the whole run wrote).

    python experiments/scaling/table_memory.py            # both plans, whole then blocked; table_memory.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GIB = 1 << 30
FIELDS = ["steps", "rows", "width", "row_block_mib", "blocks", "wall_s", "before_gib", "peak_gib", "added_gib",
          "stored_mib", "digest", "same_as_whole"]


def one(steps: str, rows: int, width: int, block_mib: int) -> dict[str, object]:
    """Compress one random table in this process and measure it."""
    sys.path.insert(0, str(ROOT))
    import torch
    from torch import nn

    from squeezeray._memory import peak_resident_bytes
    from squeezeray._memory import reset_peak
    from squeezeray._memory import resident_bytes
    from squeezeray._memory import trim
    from squeezeray.compress import compress_layer
    from squeezeray.compress._apply import splits_by_rows
    from squeezeray.compress._rows import row_blocks
    from squeezeray.spaces import parse_steps
    from squeezeray.techniques import LayerStats

    torch.manual_seed(0)
    table = nn.Linear(width, rows, bias=False, dtype=torch.bfloat16).requires_grad_(False)
    stats = LayerStats.synthetic(torch.randn(4096, width))
    plan = parse_steps(steps)
    budget = block_mib * 2**20 if block_mib else 4 * rows * width  # 0: the whole layer at once
    n_blocks = len(row_blocks(rows, width, budget)) if splits_by_rows(plan) else 1
    trim()
    before = resident_bytes() or 0
    reset_peak()
    t0 = time.perf_counter()
    out = compress_layer("lm_head", table, plan, stats, row_block_bytes=budget)
    wall = time.perf_counter() - t0
    peak = peak_resident_bytes() or 0
    h = hashlib.sha256()
    for name, t in sorted(out.named_buffers(recurse=False)):
        h.update(name.encode() + t.contiguous().view(torch.uint8).numpy().tobytes())
    return {"steps": steps, "rows": rows, "width": width, "row_block_mib": block_mib, "blocks": n_blocks,
            "wall_s": round(wall, 2), "before_gib": round(before / GIB, 3), "peak_gib": round(peak / GIB, 3),
            "added_gib": round((peak - before) / GIB, 3), "stored_mib": round(out.nbytes() / 2**20, 1),
            "digest": h.hexdigest()[:16]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", nargs="+", default=["rtn-w8", "gptq-w3g128"])
    ap.add_argument("--rows", type=int, default=49152)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--block-mib", type=int, default=64, help="row block budget of the blocked runs (MiB of float32)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child: JSON of one run's arguments
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(**json.loads(args.one))))
        return
    rows = []
    for steps in args.steps:
        whole = None
        for block_mib in (0, args.block_mib):
            spec = json.dumps({"steps": steps, "rows": args.rows, "width": args.width, "block_mib": block_mib})
            done = subprocess.run([sys.executable, __file__, "--one", spec], check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            whole = whole or row["digest"]
            row["same_as_whole"] = row["digest"] == whole
            print(row, flush=True)
            rows.append(row)
    with open(HERE / "table_memory.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
