"""The pipeline's tokenizer file (tokenizer.json, read at run time by the `tokenizers` package): a Hugging Face
T5 encoder folder's own, checked for T5's special ids, or an offline stand-in built here.

No package on the registries ships T5's sentencepiece model, so the stand-in is a small Unigram vocabulary
with T5's conventions: the special ids pad 0, eos 1, unk 2; sentencepiece's word-boundary marker
"\u2581" prepended to every word; NFKC normalisation with runs of spaces collapsed; "</s>" appended to every
text. It lets the whole pipeline run with no download, like the tiny preset does for the transformer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptdit.contract.errors import InputError

T5_SPECIAL = {"<pad>": 0, "</s>": 1, "<unk>": 2}
WORD_BOUNDARY = "\u2581"
# Words of image prompts, most useful first; with the characters below they make the stand-in's vocabulary.
STANDIN_WORDS = """a an the of and in on with at by for to from under over near behind red orange yellow green blue
purple pink white black gray grey brown golden silver fox dog cat bird horse cow lion tiger bear wolf deer
rabbit owl eagle fish whale dragon robot man woman child girl boy person people portrait face eyes hair smile
tree trees forest flower flowers garden grass field mountain mountains river lake sea ocean beach wave waves sky
cloud clouds sun sunset sunrise moon star stars night rain snow winter summer autumn spring city street house
castle bridge road car train boat ship plane window door room table chair book lamp light shadow fire water ice
stone rock sand desert island village tower building painting photo photograph drawing sketch illustration
render style art oil watercolor digital cinematic realistic detailed beautiful cute small big large tiny old
young happy dark bright soft sharp high quality resolution 4k 8k hd lens bokeh close up view wide angle shot
standing sitting running flying walking jumping sleeping looking wearing holding playing eating lazy quick
brown jumps fence hat coat dress glasses background foreground colorful vibrant pastel neon misty foggy epic""".split()
STANDIN_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()&/"


def standin_tokenizer(vocab_size: int) -> Any:
    """A T5-convention Unigram tokenizer whose ids are all below `vocab_size` (the stand-in encoder's)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    pieces = [(token, 0.0) for token in T5_SPECIAL] + [(WORD_BOUNDARY, -4.0)]
    pieces += [(WORD_BOUNDARY + c, -9.0) for c in STANDIN_CHARACTERS] + [(c, -10.0) for c in STANDIN_CHARACTERS]
    words = list(dict.fromkeys(STANDIN_WORDS))
    pieces += [(WORD_BOUNDARY + w, -6.0 - i / len(words)) for i, w in enumerate(words)]
    unique: dict[str, float] = {}
    for piece, score in pieces:
        unique.setdefault(piece, score)
    pieces = list(unique.items())[:vocab_size]
    if len(pieces) < len(T5_SPECIAL) + 1:
        raise InputError(f"a vocabulary of {vocab_size} entries is too small for a tokenizer")
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=T5_SPECIAL["<unk>"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", T5_SPECIAL["</s>"])])
    tokenizer.decoder = decoders.Metaspace(replacement=WORD_BOUNDARY, prepend_scheme="always")
    return tokenizer


def load_tokenizer(directory: Path, vocab_size: int) -> Any:
    """The tokenizer.json of a Hugging Face T5 folder, refused unless it has T5's special ids and fits the
    encoder's vocabulary."""
    from tokenizers import Tokenizer

    path = directory / "tokenizer.json"
    if not path.is_file():
        raise InputError(f"{directory} has no tokenizer.json: save the fast tokenizer next to the encoder "
                         f"(transformers: T5TokenizerFast.from_pretrained(DIR).save_pretrained(DIR))")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own exception type for unreadable files
        raise InputError(f"{path} is not a readable tokenizers file ({str(e).splitlines()[0]})") from None
    found = {token: tokenizer.token_to_id(token) for token in T5_SPECIAL}
    if found != T5_SPECIAL:
        raise InputError(f"{path} is not a T5 tokenizer: special ids {found}, T5 has {T5_SPECIAL}")
    if tokenizer.get_vocab_size(with_added_tokens=True) > vocab_size:
        raise InputError(f"{path} has {tokenizer.get_vocab_size(with_added_tokens=True)} tokens, more than the "
                         f"encoder's vocabulary of {vocab_size}")
    return tokenizer
