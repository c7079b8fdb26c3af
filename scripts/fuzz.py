"""The GGUF mutation fuzzer for longer: many mutants, every entry point, a report of what broke.

    python scripts/fuzz.py [--mutants 20000] [--seconds S] [--seed N] [--out fuzz-findings]

Each mutant that ends in anything but success or one clear GGUFLMError line (or takes longer than
--timeout seconds, or grows the process past --max-rss-gb) is saved to --out with what was done to
it. Runs each mutant in a child process so a hang or a crash is caught too.
"""

import argparse
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import gguf  # noqa: E402

from gguflm.synthetic.mutants import mutate, probe, sites  # noqa: E402


def _child(path: str, max_rss_gb: float, queue) -> None:
    import torch

    torch.set_num_threads(1)  # forked: no thread pool of the parent's to inherit
    limit = int(max_rss_gb * 2**30) + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    outcome = probe(path)
    queue.put((outcome.stage, outcome.clean, outcome.error[-3000:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this long even if fewer mutants were run (a budget on a loaded machine)")
    parser.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 30))
    parser.add_argument("--out", default="fuzz-findings")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--max-rss-gb", type=float, default=2.0)
    args = parser.parse_args()
    from test_fuzz_gguf import base_files

    import gguflm.chat.template  # noqa: F401  (imported once here: every forked child starts with them)
    import gguflm.info  # noqa: F401
    import gguflm.model  # noqa: F401
    import gguflm.tokenizer  # noqa: F401

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gguflm-fuzz-"))
    bases = [(p.read_bytes(), min(t.data_offset for t in gguf.GGUFReader(p).tensors), sites(p), p)
             for p in base_files(work)]
    rng = random.Random(args.seed)
    ctx = mp.get_context("fork")
    counts: dict[str, int] = {}
    found = 0
    started = time.monotonic()
    print(f"seed {args.seed}: {args.mutants} mutants of {len(bases)} files", flush=True)
    done = 0
    for i in range(args.mutants):
        if args.seconds is not None and time.monotonic() - started > args.seconds:
            break
        done = i + 1
        data, header_end, all_sites, base = bases[i % len(bases)]
        mutant, what = mutate(data, header_end, all_sites, rng, base)
        path = work / "mutant.gguf"
        path.write_bytes(mutant)
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(str(path), args.max_rss_gb, queue))
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
        counts[stage if clean else "FOUND " + stage] = counts.get(stage if clean else "FOUND " + stage, 0) + 1
        if not clean:
            found += 1
            (out / f"mutant-{args.seed}-{i}.gguf").write_bytes(mutant)
            (out / f"mutant-{args.seed}-{i}.txt").write_text(f"{what}\n{stage}\n{error}\n")
        if (i + 1) % 500 == 0:
            print(f"{i + 1} mutants, {time.monotonic() - started:.0f} s: {counts}", flush=True)
    print(f"done: {done} mutants in {time.monotonic() - started:.0f} s, {found} findings: {counts}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
