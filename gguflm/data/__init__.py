"""Files shipped inside the package: the demo model `run` and `chat` use when given none."""

from __future__ import annotations

from pathlib import Path

# llama2.c's 260K-parameter TinyStories llama as GGUF (F32, 1.2 MB): MIT, see the LICENSE files here
DEMO_MODEL = Path(__file__).with_name("stories260K.gguf")
