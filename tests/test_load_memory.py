"""Loading streams tensor by tensor: host memory never holds a second full copy of the model."""

import subprocess
import sys
import textwrap

from gguflm.synthetic import SyntheticSpec, write_synthetic_gguf

PROBE = textwrap.dedent(
    """
    import sys, torch, gguflm

    def anon_kib():  # anonymous memory only: the file's memory-mapped pages are RssFile
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

    torch.zeros(1)  # let torch settle its own allocations first
    before = anon_kib()
    model = gguflm.load(sys.argv[1], device="cpu")
    print(anon_kib() - before)
    """
)


def test_cpu_load_holds_one_copy(tmp_path):
    spec = SyntheticSpec(dim=512, ffn_dim=2048, n_layers=4, n_heads=8, n_kv_heads=8, n_vocab=8192, qtype="F32")
    path = write_synthetic_gguf(tmp_path / "m.gguf", spec)
    model_kib = path.stat().st_size // 1024  # ~ 65 MiB of F32 weights
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True)
    grown = int(out.stdout.strip())
    # the loaded weights themselves, plus at most one tensor in flight (the largest is 1/4 of the file)
    assert grown < 1.3 * model_kib, (grown, model_kib)
