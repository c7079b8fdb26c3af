"""`convert_checkpoint`: write a plan to a GGUF file, streaming one tensor at a time, atomically."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import gguf
import numpy as np

from gguflm.convert import hparams as H
from gguflm.convert import validate
from gguflm.convert.checkpoint import first_line
from gguflm.convert.encode import encode_chunks
from gguflm.convert.plan import ConversionPlan, make_plan
from gguflm.convert.vocab import has_tokenizer, write_vocab
from gguflm.errors import GGUFLMError
from gguflm.files import atomic_write, remove_stale_parts

log = logging.getLogger(__name__)


def default_output(hf_dir: Path, outtype: str, vocab_only: bool = False) -> Path:
    """`<dir-name>-<OUTTYPE>.gguf` (or `-vocab.gguf`) in the current directory, like llama.cpp's naming."""
    suffix = "vocab" if vocab_only else outtype.upper()
    return Path.cwd() / f"{Path(hf_dir).resolve().name}-{suffix}.gguf"


def build_writer(plan: ConversionPlan, *, vocab_only: bool = False, pre: str | None = None) -> gguf.GGUFWriter:
    """A GGUFWriter (not yet bound to a file) holding all metadata and tensor infos of `plan`."""
    w = gguf.GGUFWriter(path=None, arch=plan.arch.name)
    w.add_type(gguf.GGUFType.MODEL)
    _add_model_card(w, plan)
    H.write_hparams(w, plan.config, plan.arch)
    w.add_file_type(plan.file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if has_tokenizer(plan.hf_dir):
        add_prefix = gguf.Keys.Tokenizer.ADD_PREFIX in plan.arch.converter_keys
        write_vocab(w, plan.hf_dir, plan.config, add_prefix_key=add_prefix, pre=pre)
    elif vocab_only:
        raise GGUFLMError(f"--vocab-only needs a tokenizer, and {plan.hf_dir} has none.")
    else:
        log.warning("%s has no tokenizer files; writing a GGUF without a vocabulary", plan.hf_dir)
    validate.check_metadata(w)
    for t in plan.tensors:
        # A float32 dtype with raw_dtype set makes the writer keep the logical shape as given.
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    return w


def _add_model_card(w: gguf.GGUFWriter, plan: ConversionPlan) -> None:
    """general.* keys from README.md's front matter, config.json and generation_config.json (gguf-py's
    reader, as llama.cpp's converter uses it); a file it cannot parse is one clear error."""
    import yaml

    try:
        meta = gguf.Metadata.load(None, plan.hf_dir, None, plan.n_params)
        if meta.name is None:
            meta.name = plan.hf_dir.resolve().name
        if meta.size_label is None and plan.n_params > 0:
            meta.size_label = gguf.size_label(plan.n_params, plan.n_params, 0, 0)
        meta.set_gguf_meta_model(w)
    except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError, IndexError, OSError,
            RecursionError) as e:  # gguf-py reads these files with no checks of its own
        raise GGUFLMError(f"cannot read the model card and generation settings of {plan.hf_dir} "
                          f"(README.md, generation_config.json): {first_line(e)}") from None


def convert_checkpoint(hf_dir: Path, out_path: Path, outtype: str = "f32", *, vocab_only: bool = False,
                       dry_run: bool = False, progress: bool = False, pre: str | None = None,
                       allow_pickle: bool = False) -> Path:
    """Convert the Hugging Face checkpoint in `hf_dir` to GGUF at `out_path` and return that path.

    Tensors stream in row chunks (peak memory is a chunk, or one Q/K matrix), and the file
    appears under `out_path` only once complete and read back by gguflm's own checks: an error,
    Ctrl-C or SIGTERM leaves nothing behind (and parts a killed conversion left are removed).
    """
    plan = make_plan(Path(hf_dir), outtype, vocab_only=vocab_only, allow_pickle=allow_pickle)
    w = build_writer(plan, vocab_only=vocab_only, pre=pre)
    out_path = Path(out_path)
    if dry_run:
        return out_path
    if out_path.is_dir():
        raise GGUFLMError(f"output path {out_path} is a directory.")
    remove_stale_parts(out_path)
    with sigterm_as_interrupt(), atomic_write(out_path, "the GGUF file") as tmp:
        try:
            w.write_header_to_file(path=tmp)
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            _write_data(w, plan, progress)
        finally:
            w.close()
        validate.check_output(tmp, weights=not vocab_only, tokenizer=has_tokenizer(plan.hf_dir))
    return out_path


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a `kill`, a job scheduler's stop) raises KeyboardInterrupt, as Ctrl-C does, so the
    partial file is removed on the way out; only the main thread can install a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_data(w: gguf.GGUFWriter, plan: ConversionPlan, progress: bool) -> None:
    f = w.fout[0]
    bar = _progress_bar(plan) if progress else None
    try:
        for i, t in enumerate(plan.tensors):
            if bar is not None:
                bar.set_postfix_str(f"tensor {i + 1}/{len(plan.tensors)} {t.name}", refresh=False)
            w.write_padding(f, f.tell())
            written = 0
            for chunk in encode_chunks(t):
                f.write(memoryview(chunk).cast("B"))
                written += chunk.nbytes
                if bar is not None:
                    bar.update(chunk.nbytes)
            if written != t.nbytes:
                raise GGUFLMError(f"tensor {t.name} encoded to {written} bytes, expected {t.nbytes}.")
        w.write_padding(f, f.tell())
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(plan: ConversionPlan):
    from tqdm import tqdm

    return tqdm(total=plan.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                desc=f"converting ({len(plan.tensors)} tensors)", dynamic_ncols=True)
