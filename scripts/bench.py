"""Decode/prefill benchmark against the measured copy bandwidth; the same as `gguflm bench`.

Usage: python scripts/bench.py --shape llama-3-8b [--contexts 128,512,4096,16384] [--json out.json]
       python scripts/bench.py --model path/to/model.gguf
"""

import sys

from gguflm.cli.main import main

if __name__ == "__main__":
    sys.argv[1:1] = ["bench"]
    main()
