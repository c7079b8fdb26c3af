"""Pre-tokenizer settings per tokenizer.ggml.pre name: split regexes and flags, as llama.cpp chooses them.

Every name llama.cpp's llama-vocab.cpp accepts is here, grouped by the LLAMA_VOCAB_PRE_TYPE_* family it
maps to. The regexes are the originals from each model's tokenizer.json where llama.cpp quotes one (its
own copies are rewritten for std::regex, which lacks \\p{Lu} and case-insensitive groups); they run in
order, each splitting every piece the previous one produced, and text no alternative matches stays a
piece of its own (tokenizers' "isolated" split, the same as llama.cpp's unicode_regex_split).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

# ---- the regexes --------------------------------------------------------------------------------

_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
          r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_UPPER, _LOWER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
TEKKEN = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
         rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Kimi-K2 (tiktoken): GPT-4o's words, but Han characters are runs of their own and never part of a word.
_UPPER_NOT_HAN = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]"
_LOWER_NOT_HAN = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]"
KIMI_K2 = (rf"\p{{Han}}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER_NOT_HAN}*{_LOWER_NOT_HAN}+{_CONTRACTIONS}?"
           rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER_NOT_HAN}+{_LOWER_NOT_HAN}*{_CONTRACTIONS}?"
           r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEEPSEEK3 = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
             r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CJK_KANA = r"[一-龥぀-ゟ゠-ヿ]+"
_DIGITS3 = r"\p{N}{1,3}"
# Runs of digits cut into threes from the right: the first piece takes the 1 or 2 left over (AFMoE).
_DIGITS_FROM_RIGHT = r"\p{N}{1,3}(?=(?:\p{N}{3})*(?!\p{N}))"
_NEWLINE_RUNS = r"[^\n]+|[\n]+"
_PORO = r" ?[^(\s|.,!?…。，、।۔،)]+"
_DEEPSEEK_LLM_LETTERS = (  # escaped: several of these characters change under Unicode normalization
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943"
)
_DEEPSEEK_LLM = (r"[\r\n]", rf"\s?[{_DEEPSEEK_LLM_LETTERS}]+", "\\s?[!-/:-~！-／：-～‘-‟\u3000-。]+", r"\s+$",
                 "[一-龥ࠀ-一가-\ud7ff]+", r"\p{N}+")
_DEEPSEEK_CODER = (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-\ud7ff]+", r"\p{N}")
_DEFAULT_PUNCT = r"[\p{P}\$\+<=>\^~\|]+"
_AFMOE_ASIAN = "[一-鿿㐀-䶿豈-\ufaff\u3040-ゟ゠-ヿ･-ﾟ⼀-\u2fdfเ-\u0e7f\u0e80-\u0effក-\u17ffက-႟ꩠ-ꩿꧠ-\ua9ff가-\ud7afᄀ-ᇿ]+"
_YOUTU_ASIAN = "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|" + _CJK_KANA
_YOUTU = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
          rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_JAIS2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
          + "".join(rf"|\s{{{n}}}(?!\S)" for n in (512, 256, 128, 64, 32, 16, 8, 4)) + r"|\s{1,2}(?!\S)|\s{1}")
_SEED_CODER = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# The original's possessive ?+ and ++ cannot give anything back here, so plain greedy ones match the same.
_BAILINGMOE = (r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]|\s+(?!\S)|\s+")
_UFAKZEKA = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_EXAONE_MOE = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+")
_MINICPM5 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
_SPARK2_5 = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
             r"| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+")
_CHAMELEON = (r"<sentinel:[0-9]+>", r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", r"([\t\n]|    |  )", r"\p{N}",
              r"[\p{P}!-/:-@\[-`{-~]", GPT2)


# ---- the table ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreTokenizer:
    """How one pre-tokenizer splits text and what llama.cpp switches on for it."""

    family: str                  # llama.cpp's LLAMA_VOCAB_PRE_TYPE_* name, lower case
    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a whole pre-token found in the vocab is taken as is
    add_bos: bool = False        # llama.cpp's default when tokenizer.ggml.add_bos_token is absent
    clean_spaces: bool = True    # llama.cpp's detokenizer clean-up (" ," -> ",")
    byte_encode: bool = True     # GPT-2's byte-to-character map; False: raw UTF-8 with <0xXX> fallback
    escape_spaces: bool = False  # spaces become "▁" before splitting (SentencePiece-style BPE)
    newline_tokens: bool = False  # a run of newlines that is a token is taken whole (gemma4)

    def summary(self) -> str:
        """One line for `gguflm info`: the family, how many regexes, and the rules that are on."""
        rules = [label for on, label in (
            (self.ignore_merges, "whole words from the vocab"), (self.newline_tokens, "newline runs whole"),
            (self.escape_spaces, "spaces as ▁"), (not self.byte_encode, "raw UTF-8"),
            (self.clean_spaces, "decode cleans spaces")) if on]
        n = len(self.regexes)
        return f"{self.family} ({n} regex{'es' if n != 1 else ''}" + "".join(f", {r}" for r in rules) + ")"


_ON_BY_DEFAULT = ("clean_spaces", "byte_encode")


def _entry(names: str, family: str, regexes: tuple[str, ...], flags: str = "") -> dict[str, PreTokenizer]:
    """Names (space-separated) sharing one family. Each flag names a PreTokenizer field to flip from its
    default: clean_spaces and byte_encode are turned off, the others on."""
    options = {f: f not in _ON_BY_DEFAULT for f in flags.split()}
    return dict.fromkeys(names.split(), PreTokenizer(family, regexes, **options))


_GPT2_RX = (GPT2,)
_STARCODER_RX = (r"\p{N}", GPT2)
_DEEPSEEK3_RX = (_DIGITS3, _CJK_KANA, DEEPSEEK3)
_KEEP = "clean_spaces"  # the listed flag turns the space clean-up off
_RAW = "byte_encode escape_spaces"

_TABLE: dict[str, PreTokenizer] = {
    **_entry("default", "default", (_DEFAULT_PUNCT, GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")),
    **_entry("llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano", "llama3",
             (LLAMA3,), "ignore_merges add_bos"),
    **_entry("dbrx", "dbrx", (LLAMA3,)),
    **_entry("smaug-bpe", "smaug", (LLAMA3,)),
    **_entry("chatglm-bpe", "chatglm4", (LLAMA3,)),
    **_entry("glm4 glm5", "chatglm4", (LLAMA3,), "ignore_merges"),
    **_entry("jais-2", "jais2", (_JAIS2,)),
    **_entry("minicpm5", "minicpm5", (_DIGITS3, _MINICPM5), "ignore_merges"),
    **_entry("deepseek-llm", "deepseek_llm", _DEEPSEEK_LLM, _KEEP),
    **_entry("deepseek-coder", "deepseek_coder", _DEEPSEEK_CODER, _KEEP),
    **_entry("deepseek-v3", "deepseek3_llm", _DEEPSEEK3_RX, _KEEP),
    **_entry("hunyuan-dense", "hunyuan_dense", _DEEPSEEK3_RX, _KEEP),
    **_entry("joyai-llm", "joyai_llm", _DEEPSEEK3_RX, _KEEP),
    **_entry("hy_v4", "hy_v4", _DEEPSEEK3_RX, _KEEP),
    **_entry("spark2_5", "spark2_5", (_DIGITS3, _CJK_KANA, _SPARK2_5, r"\p{N}"), _KEEP),
    **_entry("youtu", "youtu", (_YOUTU_ASIAN, _YOUTU), "clean_spaces ignore_merges"),
    **_entry("falcon", "falcon", (r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]")),
    **_entry("starcoder", "starcoder", _STARCODER_RX),
    **_entry("refact", "refact", _STARCODER_RX),
    **_entry("command-r", "command_r", _STARCODER_RX, _KEEP),
    **_entry("smollm", "smollm", _STARCODER_RX, _KEEP),
    **_entry("codeshell", "codeshell", _STARCODER_RX),
    **_entry("exaone", "exaone", _STARCODER_RX),
    **_entry("minerva-7b", "minerva", _STARCODER_RX),
    **_entry("mellum2", "mellum2", _STARCODER_RX),
    **_entry("gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert exaone4 "
             "jina-v1-en jina-v2-code roberta-bpe", "gpt2", _GPT2_RX),
    **_entry("mpt", "mpt", _GPT2_RX),
    **_entry("olmo", "olmo", _GPT2_RX),
    **_entry("jais", "jais", _GPT2_RX),
    **_entry("trillion", "trillion", _GPT2_RX, _KEEP),
    **_entry("granite-docling", "granite_docling", _GPT2_RX, _KEEP),
    **_entry("qwen2 deepseek-r1-qwen kormo f2llmv2", "qwen2", (QWEN2,), _KEEP),
    **_entry("megrez", "qwen2", (QWEN2,)),
    **_entry("stablelm2", "stablelm2", (QWEN2,)),
    **_entry("hunyuan", "hunyuan", (QWEN2,), _KEEP),
    **_entry("solar-open", "solar_open", (QWEN2,), _KEEP),
    **_entry("grok-2", "grok_2", (QWEN2,), _KEEP),
    **_entry("qwen35", "qwen35", (QWEN35,), _KEEP),
    **_entry("laguna", "laguna", (_NEWLINE_RUNS, QWEN2), _KEEP),
    **_entry("poro-chat", "poro", (_PORO,), _KEEP),
    **_entry("bloom", "bloom", (_PORO,)),
    **_entry("gpt3-finnish", "gpt3_finnish", (_PORO,)),
    **_entry("viking", "viking", (_PORO, r"\p{N}"), _KEEP),
    **_entry("tekken", "tekken", (TEKKEN,), "clean_spaces ignore_merges add_bos"),
    **_entry("chameleon", "chameleon", _CHAMELEON, "clean_spaces add_bos"),
    **_entry("gpt-4o llama4 kanana2 talkie", "gpt4o", (GPT4O,), _KEEP),
    **_entry("minimax-m2", "minimax_m2", (GPT4O,), _KEEP),
    # llama.cpp adds \p{M} to its std::regex copy of GPT-4o's words for this one; the original has it.
    **_entry("granite-embed-multi-97m", "granite_emb_multi", (GPT4O,), "clean_spaces ignore_merges"),
    **_entry("tiny_aya cohere2moe", "tiny_aya", (r"\d{1,3}(?=(?:\d{3})*\b)", GPT4O), _KEEP),
    **_entry("kimi-k2", "kimi_k2", (KIMI_K2,), _KEEP),
    **_entry("superbpe", "superbpe", (r"\p{N}+", r"(?=(\d{3})+(?!\d))"), _KEEP),
    **_entry("bailingmoe bailingmoe2 llada-moe", "bailingmoe", (_BAILINGMOE,), _KEEP),
    **_entry("seed-coder", "seed_coder", (_SEED_CODER,), _KEEP),
    **_entry("ufakzeka", "ufakzeka", (_UFAKZEKA,), _KEEP),
    **_entry("afmoe", "afmoe", (_DIGITS_FROM_RIGHT, _AFMOE_ASIAN, DEEPSEEK3), _KEEP),
    **_entry("exaone-moe", "exaone_moe", (_EXAONE_MOE,)),
    **_entry("gemma4 granite-embed-multi-311m", "gemma4", (_NEWLINE_RUNS,), _RAW + " newline_tokens"),
    **_entry("sarvam-moe", "sarvam_moe", (_NEWLINE_RUNS,), _RAW + " clean_spaces"),
    **_entry("whitespace", "whitespace", (r"\S+",), "byte_encode"),
}

SUPPORTED = tuple(sorted(_TABLE))
FALLBACK = "gpt-2"


def pre_tokenizer_for(name: str | None, source: str = "the vocabulary") -> PreTokenizer:
    """The settings for a pre-tokenizer name (looked up once per load). An unknown name warns and splits
    like GPT-2; no name at all is llama.cpp's 'default' split, with its warning that quality suffers."""
    if name is None:
        warnings.warn(f"{source} has no tokenizer.ggml.pre: using llama.cpp's 'default' pre-tokenizer, so "
                      "tokens may differ from the model's own tokenizer (reconverting the model fixes this)",
                      UserWarning, stacklevel=3)
        return _TABLE["default"]
    spec = _TABLE.get(name)
    if spec is None:
        # repr() escapes whatever a hostile file put in the name
        warnings.warn(f"{source}: unknown tokenizer.ggml.pre {name!r}: splitting text like '{FALLBACK}' "
                      "instead, so tokens may differ from the model's own tokenizer", UserWarning, stacklevel=3)
        return _TABLE[FALLBACK]
    return spec
