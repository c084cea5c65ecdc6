# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""The SD 1.5 CLIP tokenizer, rebuilt offline from open_clip's bundled BPE vocabulary."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

from torchgeo_earthsynth.atomic import atomic_write_text
from torchgeo_earthsynth.cache import default_cache_dir

__all__ = ('clip_tokenizer',)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map."""
    printable = (
        list(range(ord('!'), ord('~') + 1))
        + list(range(ord('¡'), ord('¬') + 1))
        + list(range(ord('®'), ord('ÿ') + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _tokenizer_dir() -> Path:
    return default_cache_dir() / 'clip-tokenizer'


@lru_cache(maxsize=1)
def clip_tokenizer(directory: str | None = None) -> CLIPTokenizer:
    """The SD 1.5 CLIP tokenizer, rebuilt offline from open_clip's bundled BPE vocabulary.

    Token ids equal open_clip's and the real SD 1.5 tokenizer's (vocab 49408, bos 49406,
    eos = pad 49407, 77 tokens).

    Args:
        directory: where to write ``vocab.json``/``merges.txt`` (default: the cache folder).

    Returns:
        A ``transformers.CLIPTokenizer``.
    """
    import open_clip.tokenizer

    out = Path(directory) if directory else _tokenizer_dir()
    if not (out / 'merges.txt').exists():
        with gzip.open(open_clip.tokenizer.default_bpe(), 'rt', encoding='utf-8') as f:
            merges = f.read().split('\n')[1 : 49152 - 256 - 2 + 1]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + '</w>' for c in byte_chars]
        vocab += [''.join(m.split()) for m in merges] + ['<|startoftext|>', '<|endoftext|>']
        # merges.txt last: its presence says the folder is complete
        vocab_json = json.dumps({t: i for i, t in enumerate(vocab)})
        atomic_write_text(out / 'vocab.json', vocab_json, durable=False)
        merges_txt = '#version: 0.2\n' + '\n'.join(merges) + '\n'
        atomic_write_text(out / 'merges.txt', merges_txt, durable=False)
    return CLIPTokenizer.from_pretrained(str(out), model_max_length=77, pad_token='<|endoftext|>')
