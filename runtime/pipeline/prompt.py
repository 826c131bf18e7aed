"""Prompt in, token ids out: the published pipeline's caption cleaning, then T5 tokenization to the artifact's
text length (the tokenizer.json of a pipeline folder, read with the `tokenizers` package)."""

from __future__ import annotations

import html
import re
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from ptdit.contract.errors import InputError

# Caption cleaning after the published pipeline's (PixArt-alpha's clean_caption, which Open-Sora-Plan and
# Qihoo-T2X reuse): the parts that change what a T5 tokenizer sees in an ordinary prompt. Not carried over:
# its BeautifulSoup HTML stripping (tags are removed by a regex here) and its removal of CJK characters.
_URL = re.compile(r"\b((?:https?:(?:/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[/\S]*))")
_TAG = re.compile(r"<[^>]+>")
_NICK = re.compile(r"@[\w\d]+\b")
_DASHES = re.compile(r"[\u002d\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u301c\u3030\u30a0"
                     r"\ufe31\ufe32\ufe58\ufe63\uff0d]+")
_QUOTES = (re.compile(r"[`\u00b4\u00ab\u00bb\u201c\u201d\u00a8]"), re.compile(r"[\u2018\u2019]"))
_SPACES = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Lower case, URLs / tags / @nicks removed, dashes and quotes unified, HTML entities decoded, whitespace
    collapsed. With the ftfy package installed its fix_text runs first, as published."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = urllib.parse.unquote_plus(str(text)).strip().lower()
    text = html.unescape(html.unescape(text))
    text = _URL.sub("", text)
    text = _TAG.sub(" ", text)
    text = _NICK.sub("", text)
    text = _DASHES.sub("-", text)
    text = _QUOTES[0].sub('"', text)
    text = _QUOTES[1].sub("'", text)
    return _SPACES.sub(" ", text).strip()


def check_text(prompt: str) -> None:
    """A prompt is text: bytes that are not UTF-8 (a command line in another encoding; Python hands them on as
    lone surrogates) are refused, not guessed at."""
    if not isinstance(prompt, str):
        raise InputError(f"a prompt is a str, got {type(prompt).__name__}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"the prompt is not valid UTF-8 text (at character {e.start}); pass it in UTF-8") from None


class PromptTokenizer:
    """ids and mask [1, length] int64 for a prompt: cleaned, tokenized, "</s>" appended, truncated to `length`
    (the last kept token is "</s>") and padded with id 0 (mask 0), as the published pipeline calls T5's
    tokenizer (max_length, truncation, padding to max_length)."""

    def __init__(self, path: str | Path, length: int):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise InputError("the tokenizers package is not installed: pip install tokenizers") from None
        try:
            self.tokenizer: Any = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own exception type
            raise InputError(f"{path} is not a readable tokenizer.json ({str(e).splitlines()[0]})") from None
        self.tokenizer.enable_truncation(max_length=length)
        self.tokenizer.enable_padding(length=length, pad_id=0, pad_token="<pad>")
        self.length = length

    def __call__(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        check_text(prompt)
        encoding = self.tokenizer.encode(clean_prompt(prompt))
        ids = np.asarray(encoding.ids, dtype=np.int64)[None]
        mask = np.asarray(encoding.attention_mask, dtype=np.int64)[None]
        return ids, mask
