"""Hashed text features of the tierwatch rescorer: the reference implementation.

The Rust featurizer (daemon/src/rescore/features.rs) must produce the same sparse vector for every
string: same nonzero indices, values within 1e-6. Everything here is therefore spelled out at the
level of code points and bytes instead of relying on library conveniences whose behaviour differs
between languages (str.lower vs to_lowercase, str.split vs split_whitespace, regex \\w classes):

1. Truncate to the first ``max_chars`` code points (bounds the cost of a pathological query).
2. Lowercase ASCII A-Z only; every other code point is kept as is.
3. Collapse each run of ASCII whitespace (space, \\t, \\n, \\v, \\f, \\r) into one space; strip the
   ends. Non-ASCII whitespace (e.g. U+00A0) is an ordinary character.
4. Word tokens: maximal runs of "word" code points, i.e. ASCII letters and digits and every code
   point >= 0x80. Word n-grams for n in word_ngrams: the tokens joined by one space.
5. Char n-grams for n in char_ngrams: every window of n code points of " " + text + " ".
6. Each n-gram's UTF-8 bytes are hashed with XXH3-64 (seed ``word_seed`` for words, ``char_seed``
   for chars). index = h % dim; the sign is -1 when bit 63 of h is set, else +1 (alternate signs
   make hash collisions cancel on average instead of adding up).
7. The signed counts are L2-normalised (the zero vector stays zero).
"""

from __future__ import annotations

import math

import numpy as np
import xxhash

ASCII_WS = " \t\n\x0b\x0c\r"
_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}

# The spec written into the model's sidecar; the Rust side refuses any other version.
DEFAULT_SPEC = {
    "version": 1,
    "max_chars": 2048,
    "lowercase": "ascii",
    "whitespace": "ascii_collapse_strip",
    "token": "ascii_alnum_or_non_ascii",
    "word_ngrams": [1, 2],
    "char_ngrams": [3, 5],
    "char_pad": " ",
    "hash": "xxh3_64",
    "word_seed": 0x7469657277617463,  # "tierwatc"
    "char_seed": 0x63686172677261,  # "chargra"
    "dim": 1 << 12,
    "sign": "bit63",
    "transform": "l2",
}


def normalize(text: str, max_chars: int) -> str:
    text = text[:max_chars].translate(_LOWER)
    out = []
    in_ws = False
    for ch in text:
        if ch in ASCII_WS:
            in_ws = True
            continue
        if in_ws and out:
            out.append(" ")
        in_ws = False
        out.append(ch)
    return "".join(out)


def _is_word(ch: str) -> bool:
    o = ord(ch)
    return o >= 0x80 or ("0" <= ch <= "9") or ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def tokens(norm: str) -> list[str]:
    toks = []
    cur = []
    for ch in norm:
        if _is_word(ch):
            cur.append(ch)
        elif cur:
            toks.append("".join(cur))
            cur = []
    if cur:
        toks.append("".join(cur))
    return toks


def ngram_keys(text: str, spec: dict) -> list[tuple[bytes, int]]:
    """(UTF-8 bytes, seed) of every n-gram, in the order the Rust side emits them."""
    norm = normalize(text, spec["max_chars"])
    keys = []
    toks = tokens(norm)
    wlo, whi = spec["word_ngrams"]
    for n in range(wlo, whi + 1):
        for i in range(len(toks) - n + 1):
            keys.append((" ".join(toks[i : i + n]).encode("utf-8"), spec["word_seed"]))
    padded = spec["char_pad"] + norm + spec["char_pad"]
    clo, chi = spec["char_ngrams"]
    for n in range(clo, chi + 1):
        for i in range(len(padded) - n + 1):
            keys.append((padded[i : i + n].encode("utf-8"), spec["char_seed"]))
    return keys


def featurize(text: str, spec: dict = DEFAULT_SPEC) -> tuple[np.ndarray, np.ndarray]:
    """Sparse features: (sorted int64 indices, float32 values), explicit zeros dropped."""
    dim = spec["dim"]
    counts: dict[int, float] = {}
    for key, seed in ngram_keys(text, spec):
        h = xxhash.xxh3_64_intdigest(key, seed=seed)
        idx = h % dim
        counts[idx] = counts.get(idx, 0.0) + (-1.0 if h >> 63 else 1.0)
    items = sorted((i, v) for i, v in counts.items() if v != 0.0)
    if not items:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    idx = np.array([i for i, _ in items], dtype=np.int64)
    val = np.array([v for _, v in items], dtype=np.float64)
    # Signed counts are small integers: the sum of squares is exact in f64, so both sides agree
    # to the last bit before the sqrt.
    norm = math.sqrt(float(np.sum(val * val)))
    return idx, (val / norm).astype(np.float32)


def featurize_many(texts, spec: dict = DEFAULT_SPEC):
    """CSR matrix (scipy.sparse) of the texts' features, float32."""
    from scipy.sparse import csr_matrix

    indptr = [0]
    indices = []
    data = []
    for t in texts:
        i, v = featurize(t, spec)
        indices.append(i)
        data.append(v)
        indptr.append(indptr[-1] + len(i))
    ind = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    dat = np.concatenate(data) if data else np.zeros(0, dtype=np.float32)
    return csr_matrix((dat, ind, np.array(indptr)), shape=(len(texts), spec["dim"]), dtype=np.float32)
