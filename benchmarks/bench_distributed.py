"""Data-parallel throughput of ODE-Net MNIST training at 1 and 2 processes on this machine.

Each configuration runs ``neuralode mnist train`` (ODE-Net, dopri5 at tol 1e-3, adjoint, global
batch 128) for one epoch over the first ``--images`` training images, launched by torchrun
(gloo on CPU) for 2 processes. Throughput is the trainer's own measure: samples of the epoch
divided by its training seconds (data loading included, evaluation excluded). Gradient bytes
per step are counted by a DDP communication hook (the bytes of the buckets each rank
all-reduces); forward NFE is the mean over ranks and the slowest rank's. Separately, the time of
one all-reduce of that many bytes alone (gloo, 2 processes, median of 50) is measured.

    python benchmarks/bench_distributed.py [--images 6400] [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
CONFIGURATIONS = [  # (processes, threads per process)
    (1, 1),
    (1, 2),
    (2, 1),
]


def train_epoch(processes: int, threads: int, images: int, data_dir: Path) -> dict:
    """Run one epoch; the trainer's epoch record (log.jsonl)."""
    with tempfile.TemporaryDirectory() as out:
        command = ["-m", "neuralode", "mnist", "train", "--epochs", "1", "--limit", str(images)]
        command += ["--test-limit", "100", "--threads", str(threads), "--data-dir", str(data_dir)]
        command += ["--out", out, "--checkpoint-every", "1e9"]
        if processes > 1:
            command = ["-m", "torch.distributed.run", "--standalone",
                       f"--nproc_per_node={processes}", *command]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, *command], check=True, env=env, capture_output=True)
        records = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return next(record for record in records if record["kind"] == "epoch")


def allreduce_seconds(floats: int, repeats: int = 50) -> float:
    """Median seconds of one all-reduce of ``floats`` float32 values between 2 processes."""
    with tempfile.TemporaryDirectory() as out:
        result = Path(out) / "seconds.txt"
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
                   "--probe", str(floats), str(repeats), str(result)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, *command], check=True, env=env, capture_output=True)
        return float(result.read_text())


def probe(floats: int, repeats: int, result: Path) -> None:
    """On each torchrun rank: time ``repeats`` all-reduces; rank 0 writes the median."""
    import statistics
    import time

    import torch.distributed as dist

    dist.init_process_group("gloo")
    tensor = torch.ones(floats)
    times = []
    for _ in range(repeats + 5):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(tensor)
        times.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        result.write_text(str(statistics.median(times[5:])))
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=6400, help="training images (one epoch)")
    parser.add_argument("--data-dir", type=Path, default=MNIST, help="MNIST IDX folder")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)  # internal: one rank's timing
    args = parser.parse_args(argv)
    if args.probe:
        probe(int(args.probe[0]), int(args.probe[1]), Path(args.probe[2]))
        return 0
    rows = []
    for processes, threads in CONFIGURATIONS:
        record = train_epoch(processes, threads, args.images, args.data_dir)
        rows.append({"processes": processes, "threads_per_process": threads,
                     "samples_per_s": record["samples_per_s"], "seconds": record["seconds"],
                     "steps": record["step"], "nfe_forward": record["nfe_forward"],
                     "nfe_forward_max": record["nfe_forward_max"],
                     "nfe_backward": record["nfe_backward"],
                     "gradient_bytes_per_step": record["gradient_bytes_per_step"]})  # fmt: skip
        print(rows[-1], flush=True)
    gradient_bytes = rows[-1]["gradient_bytes_per_step"]
    allreduce = allreduce_seconds(int(gradient_bytes) // 4)
    base = rows[0]["samples_per_s"]
    lines = [
        "# Data-parallel throughput: ODE-Net MNIST training at 1 and 2 processes",
        "",
        f"Command: `python benchmarks/bench_distributed.py --images {args.images}`. ODE-Net "
        "(208,266 parameters, dopri5 at tol 1e-3, adjoint), global batch 128, one epoch of "
        f"{args.images:,} images; 2 processes via torchrun with gloo on loopback. torch "
        f"{torch.__version__}, {platform.machine()}, {os.cpu_count()} CPU cores.",
        "",
        "| processes × threads | samples/s | vs 1 × 1 | s/step | forward NFE (mean / slowest "
        "rank) | backward NFE | gradient bytes all-reduced per step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['processes']} × {r['threads_per_process']} | {r['samples_per_s']:.1f} | "
            f"{r['samples_per_s'] / base:.2f}× | {r['seconds'] / r['steps']:.3f} | "
            f"{r['nfe_forward']:.1f} / {r['nfe_forward_max']:.1f} | {r['nfe_backward']:.1f} | "
            f"{r['gradient_bytes_per_step']:,.0f} |"
        )
    lines += [
        "",
        f"One all-reduce of the {gradient_bytes:,.0f} gradient bytes alone (gloo, 2 processes "
        f"on this machine, median of 50): {1e3 * allreduce:.1f} ms.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_distributed.md").write_text(text)
    summary = {"rows": rows, "allreduce_seconds": allreduce, "images": args.images}
    (args.out / "bench_distributed.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
