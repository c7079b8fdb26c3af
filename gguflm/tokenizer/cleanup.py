"""llama.cpp's clean_spaces step of llama_detokenize (Hugging Face's clean_up_tokenization_spaces)."""

from __future__ import annotations


def clean_up_spaces(text: str) -> str:
    """Three passes, each over the previous one's output, exactly as llama-vocab.cpp runs them:
    " ?", " !", " .", " ," lose the space; a lone " ' " loses both spaces; " 's", " 'm", " 're",
    " 've" lose the space (" 't", " 'd", " 'll" keep theirs). Only ASCII is compared, so working on
    characters gives what llama.cpp's byte loop gives."""
    return _contractions(_lone_apostrophes(_punctuation(text)))


def _punctuation(s: str) -> str:
    out = list(s[:1])
    for i in range(1, len(s)):
        if s[i - 1] == " " and s[i] in "?!.,":
            out.pop()
        out.append(s[i])
    return "".join(out)


def _lone_apostrophes(s: str) -> str:
    out = list(s[:1])
    i, n = 1, len(s)
    skipped = -1  # llama.cpp blanks the space after a match, so it cannot serve the next match
    while i < n:
        if s[i] == "'" and i + 1 < n and s[i - 1] == " " and i - 1 != skipped and s[i + 1] == " ":
            out.pop()
            out.append("'")
            skipped = i + 1
            i += 2
            continue
        out.append(s[i])
        i += 1
    return "".join(out)


def _contractions(s: str) -> str:
    out = list(s[:1])
    n = len(s)
    for i in range(1, n):
        if s[i - 1] == " " and s[i] == "'" and i + 1 < n and (
                s[i + 1] in "sm" or (i + 2 < n and s[i + 1: i + 3] in ("re", "ve"))):
            out.pop()
        out.append(s[i])
    return "".join(out)
