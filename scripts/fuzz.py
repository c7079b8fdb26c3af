"""The mutation fuzzers for longer: many mutants, every entry point, a report of what broke.

    python scripts/fuzz.py [--mutants 20000] [--seconds S] [--seed N] [--out fuzz-findings]
    python scripts/fuzz.py --convert [--mutants 2000] ...   (broken checkpoint folders through the converter)

Each mutant that ends in anything but success or one clear GGUFLMError line (or takes longer than
--timeout seconds, or grows the process past --max-rss-gb) is saved to --out with what was done to
it. Runs each mutant in a child process so a hang or a crash is caught too.
"""

import argparse
import multiprocessing as mp
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import gguf  # noqa: E402

from gguflm.synthetic.mutants import mutate, probe, sites  # noqa: E402


def _child(probe_fn, args: tuple, max_rss_gb: float, queue) -> None:
    import torch

    torch.set_num_threads(1)  # forked: no thread pool of the parent's to inherit
    limit = int(max_rss_gb * 2**30) + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outcome = probe_fn(*args)
    queue.put((outcome.stage, outcome.clean, outcome.error[-3000:]))


class GGUFMutants:
    """Mutated GGUF files through info, load + generate, the tokenizer and the template."""

    def __init__(self, work: Path, rng: random.Random):
        from test_fuzz_gguf import base_files

        import gguflm.chat.template  # noqa: F401  (imported once here: every forked child starts with them)
        import gguflm.info  # noqa: F401
        import gguflm.model  # noqa: F401
        import gguflm.tokenizer  # noqa: F401

        self.bases = [(p.read_bytes(), min(t.data_offset for t in gguf.GGUFReader(p).tensors), sites(p), p)
                      for p in base_files(work)]
        self.path, self.rng, self.mutant = work / "mutant.gguf", rng, b""

    def make(self, i: int) -> tuple[str, tuple]:
        data, header_end, all_sites, base = self.bases[i % len(self.bases)]
        self.mutant, what = mutate(data, header_end, all_sites, self.rng, base)
        self.path.write_bytes(self.mutant)
        return what, (str(self.path),)

    probe = staticmethod(probe)

    def save(self, stem: Path) -> None:
        stem.with_suffix(".gguf").write_bytes(self.mutant)


class CheckpointMutants:
    """Mutated Hugging Face checkpoint folders through the converter (and the file it writes through gguflm)."""

    OUTTYPES = ("f32", "f16", "q8_0")

    def __init__(self, work: Path, rng: random.Random):
        from test_fuzz_convert import base_checkpoints

        import gguflm.convert  # noqa: F401
        import gguflm.model  # noqa: F401

        self.bases = base_checkpoints(work / "bases")
        self.folder, self.out, self.rng = work / "mutant", work / "out" / "m.gguf", rng
        self.out.parent.mkdir(parents=True, exist_ok=True)

    def make(self, i: int) -> tuple[str, tuple]:
        from gguflm.synthetic.checkpoint_mutants import mutate_checkpoint

        what = mutate_checkpoint(self.bases[i % len(self.bases)], self.folder, self.rng)
        return what, (self.folder, self.out, self.rng.choice(self.OUTTYPES))

    @staticmethod
    def probe(folder, out, outtype):
        from gguflm.synthetic.checkpoint_mutants import probe_checkpoint

        return probe_checkpoint(folder, out, outtype)

    def save(self, stem: Path) -> None:
        shutil.copytree(self.folder, stem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convert", action="store_true", help="fuzz the converter with broken checkpoint folders")
    parser.add_argument("--mutants", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this long even if fewer mutants were run (a budget on a loaded machine)")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 30))
    parser.add_argument("--out", default="fuzz-findings")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--max-rss-gb", type=float, default=2.0)
    args = parser.parse_args()

    import logging

    logging.disable(logging.WARNING)  # gguf-py and transformers narrate every broken file
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gguflm-fuzz-"))
    rng = random.Random(args.seed)
    mutants = (CheckpointMutants if args.convert else GGUFMutants)(work, rng)
    ctx = mp.get_context("fork")
    counts: dict[str, int] = {}
    found = done = 0
    started = time.monotonic()
    kind = "checkpoint folders" if args.convert else f"mutants of {len(mutants.bases)} files"
    print(f"seed {args.seed}: {args.mutants} {kind}", flush=True)
    for i in range(args.mutants):
        if args.seconds is not None and time.monotonic() - started > args.seconds:
            break
        done = i + 1
        what, probe_args = mutants.make(i)
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(mutants.probe, probe_args, args.max_rss_gb, queue))
        child.start()
        child.join(args.timeout)
        if child.is_alive():
            child.kill()
            child.join()
            stage, clean, error = "hang", False, f"no answer within {args.timeout} s"
        elif queue.empty():
            stage, clean, error = "crash", False, f"exit code {child.exitcode}"
        else:
            stage, clean, error = queue.get()
        label = stage if clean else "FOUND " + stage
        counts[label] = counts.get(label, 0) + 1
        if not clean:
            found += 1
            mutants.save(out / f"mutant-{args.seed}-{i}")
            (out / f"mutant-{args.seed}-{i}.txt").write_text(f"{what}\n{stage}\n{error}\n")
        if (i + 1) % 500 == 0:
            print(f"{i + 1} mutants, {time.monotonic() - started:.0f} s: {counts}", flush=True)
    print(f"done: {done} mutants in {time.monotonic() - started:.0f} s, {found} findings: {counts}")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
