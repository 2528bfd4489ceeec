"""What a training seed costs on the CPU, and two ways to make seeds cheaper, measured:

1. **Stacking** the seeds of one architecture into one model: the student's LSTM stack (the
   demo's: 2 x 96 bidirectional, projection 96) forward and backward for S seeds, one
   ``nn.LSTM`` per seed and direction as the students run (torch's fused kernel), against one
   stacked recurrence for all seeds (a batched matrix product per time step for every seed's
   gates: eager, and compiled by TorchScript). ``torch.func.vmap`` has no batching rule for
   ``aten::lstm``, so a stacked LSTM must be written out like this.
2. **Processes**: one seed of the demo's ``kd`` trained (``--steps`` steps) in one process of
   2 threads, of 1 thread, and two seeds in two processes of 1 thread at once.

    .venv/bin/python bench/seed_cost.py [--seeds 12] [--steps 150]
        (after `make demo`: its data/ and cache/; 2 cores, nothing else running)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def stacked_lstm(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor):
    """One LSTM direction for S seeds: ``x (S, B, T, D)``, weights ``(S, D, 4H)``, ``(S, H, 4H)``,
    ``(S, 4H)`` -> ``(S, B, T, H)``."""
    gates_x = torch.matmul(x, w_ih[:, None]) + bias[:, None, None]
    h = x.new_zeros(x.shape[0], x.shape[1], w_hh.shape[1])
    c, outputs = h, []
    for t in range(x.shape[2]):
        i, f, g, o = (gates_x[:, :, t] + torch.bmm(h, w_hh)).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 2)


def time_it(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def stacking(seeds: int, batch: int, frames: int, width: int = 96, hidden: int = 96) -> None:
    from pipeline.nn.recurrent import LSTMStack

    torch.set_num_threads(2)
    x = torch.randn(batch, frames, width)
    lengths = torch.full((batch,), frames)
    stacks = [LSTMStack(width, hidden, 2, bidirectional=True) for _ in range(seeds)]

    def separate():
        sum(stack(x, lengths)[-1].square().mean() for stack in stacks).backward()

    params = [[(0.1 * torch.randn(seeds, d, 4 * hidden)).requires_grad_() for d in (w, hidden)]
              + [torch.zeros(seeds, 4 * hidden, requires_grad=True)]
              for w in (width, 2 * hidden) for _ in range(2)]  # (layer, direction)  # fmt: skip
    scripted = torch.jit.script(stacked_lstm)

    def stacked(fn):
        def step():
            h = x.expand(seeds, *x.shape)
            for layer in range(2):
                forward = fn(h, *params[2 * layer])
                backward = fn(h.flip(2), *params[2 * layer + 1]).flip(2)
                h = torch.cat([forward, backward], -1)
            h.square().mean().backward()

        return step

    base = time_it(separate)
    print(f"LSTM stack (2 x {hidden} bidirectional), {seeds} seeds, batch {batch} x {frames} "
          "frames, forward + backward, 2 threads:")  # fmt: skip
    print(f"  one nn.LSTM per seed (as trained): {1000 * base:.1f} ms")
    for name, fn in (("stacked, eager", stacked_lstm), ("stacked, TorchScript", scripted)):
        took = time_it(stacked(fn))
        print(f"  {name}: {1000 * took:.1f} ms ({base / took:.2f}x the speed)")


def processes(steps: int) -> None:
    def train(threads: int, seed: int, work: Path) -> subprocess.Popen:
        code = (
            "import dataclasses, sys, time; from pathlib import Path; "
            "from pipeline.core.config import load_params, override, section; "
            "from pipeline.students import parse_students; "
            "from pipeline.training.config import TrainConfig; from stages import train_student; "
            f"p = override(load_params({str(ROOT / 'params.yaml')!r}), {{'train.steps': {steps}, "
            f"'train.threads': {threads}, 'train.processes': 1}}); "
            f"s = dataclasses.replace(parse_students(p)['kd'], seeds=({seed},)); "
            "t = time.perf_counter(); "
            f"train_student.run({{'kd': s}}, section(p, 'train', TrainConfig), "
            f"Path({str(ROOT / 'data' / 'manifest.jsonl')!r}), {str(ROOT / 'cache')!r}, "
            f"{{'kd': Path({str(work)!r})}}, Path({str(work / 'state.pt')!r})); "
            "print(time.perf_counter() - t)"
        )
        env = {"HUBERT_KD_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"}
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                env=env, cwd=ROOT)  # fmt: skip

    def seconds(*jobs: subprocess.Popen) -> list[float]:
        return [float(job.communicate()[0].strip().splitlines()[-1]) for job in jobs]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (two,) = seconds(train(2, 0, work / "a"))
        (one,) = seconds(train(1, 0, work / "b"))
        start = time.perf_counter()
        pair = seconds(train(1, 0, work / "c"), train(1, 1, work / "d"))
        both = time.perf_counter() - start
    print(f"\none seed of kd, {steps} steps (model building and cache opening included, the "
          "process's start not):")  # fmt: skip
    print(f"  1 process, 2 threads: {two:.1f} s a seed")
    print(f"  1 process, 1 thread: {one:.1f} s a seed")
    print(f"  2 processes of 1 thread, a seed each, at once: {pair[0]:.1f} s and {pair[1]:.1f} "
          f"s: {2 * two / max(pair):.2f}x the seeds per second of one process of 2 threads "
          f"({both:.1f} s of wall time for both, the two processes' start, about "
          f"{both - max(pair):.1f} s, included: paid once a run)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4, help="utterances a batch (12 s)")
    parser.add_argument("--frames", type=int, default=150, help="frames an utterance")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    stacking(args.seeds, args.batch, args.frames)
    processes(args.steps)


if __name__ == "__main__":
    main()
