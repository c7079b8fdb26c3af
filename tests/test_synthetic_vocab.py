"""Synthetic vocabularies are valid for llama.cpp too: it maps token text -> id and aborts when
two ids share a text (GGML_ASSERT(id_to_token.size() == token_to_id.size()))."""

import gguf
import pytest

from gguflm.synthetic.shapes import SHAPES, synthetic_model
from gguflm.synthetic.vocab import K, spm_tokenizer

SIZES = sorted({300, 301, 320, 512, 1000} | {spec.n_vocab for spec in SHAPES.values()})


@pytest.mark.parametrize("n_vocab", SIZES)
def test_every_token_text_is_distinct(n_vocab):
    meta = spm_tokenizer(n_vocab)
    texts, scores, types = meta[K.LIST][0], meta[K.SCORES][0], meta[K.TOKEN_TYPE][0]
    assert len(texts) == len(scores) == len(types) == n_vocab
    assert len(set(texts)) == n_vocab
    assert all(texts)


def test_a_written_benchmark_file_holds_a_distinct_vocabulary(tmp_path):
    """What llama-bench would read: the token list of a synthetic shape file, as stored."""
    import gguflm

    path = synthetic_model("tiny", tmp_path)
    reader = gguf.GGUFReader(path)
    field = reader.fields[K.LIST]
    texts = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    assert len(texts) == SHAPES["tiny"].n_vocab == len(set(texts))
    tok = gguflm.load(path, device="cpu").tokenizer
    ids = tok.encode("hello world, once", add_special=False)
    assert "".join(texts[i] for i in ids) == "▁hello▁world<0x2C>▁once"  # the comma is a byte token
    assert tok.decode(ids) == "hello world, once"
