"""Text normalisation and tokenisation that match the GloVe 6B vocabulary.

GloVe 6B (Wikipedia 2014 + Gigaword 5) was built from lowercased text tokenised with the
Stanford PTB tokenizer.  A word vector can only be found for a token if we cut the text the
same way, so this module reproduces the parts of that tokenisation that matter for
conversational English (checked against the 400k-word GloVe 6B vocabulary):

* punctuation is split off as separate tokens (``,`` ``.`` ``!`` ``?`` ``"`` ``'`` ...);
* clitics are split the PTB way: ``don't`` -> ``do n't``, ``can't`` -> ``ca n't``,
  ``won't`` -> ``wo n't``, ``I'm`` -> ``i 'm``, ``you've`` -> ``you 've``,
  ``Joey's`` -> ``joey 's`` (GloVe has ``n't``, ``ca``, ``wo``, ``'s``, ``'m``, ...);
* ``...`` stays one token (any run of two or more dots becomes ``...``: GloVe has no ``..``);
* numbers stay whole (``1,000``, ``1.5``, ``3:00``), as do hyphenated words (``x-ray``,
  ``uh-huh``, ``so-so``) and words with an inner apostrophe (``o'clock``);
* dotted abbreviations keep their dots (``mr.``, ``dr.``, ``u.s.``, ``a.m.``), which is how
  GloVe stores them.

Everything is done with a few precompiled regular expressions because the predict path
tokenises up to millions of utterances.
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "tokenize"]

# Characters that NFKC leaves alone but that GloVe 6B (ASCII-tokenised news and Wikipedia)
# mostly knows in their ASCII form.  MELD alone has ~3.5k "’" in its training split.
_CHAR_MAP = str.maketrans(
    {
        "\u2018": "'",  # left single quotation mark
        "\u2019": "'",  # right single quotation mark (used as apostrophe: "I’m")
        "\u201a": "'",  # single low-9 quotation mark
        "\u201b": "'",  # single high-reversed-9 quotation mark
        "\u2032": "'",  # prime
        "\u00b4": "'",  # acute accent used as apostrophe
        "`": "'",  # backtick used as apostrophe / opening quote
        "\u201c": '"',  # left double quotation mark
        "\u201d": '"',  # right double quotation mark
        "\u201e": '"',  # double low-9 quotation mark
        "\u201f": '"',  # double high-reversed-9 quotation mark
        "\u2033": '"',  # double prime
        "\u00ab": '"',  # left guillemet
        "\u00bb": '"',  # right guillemet
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # figure dash
        "\u2212": "-",  # minus sign
        "\u2043": "-",  # hyphen bullet
        "\u00ad": "",  # soft hyphen: invisible, must not split or join words
        "\u200b": "",  # zero-width space
        "\ufeff": "",  # byte-order mark / zero-width no-break space
        "\u2026": "...",  # horizontal ellipsis (NFKC would do it too; cheaper here)
    }
)

# An en dash between digits is a range ("1–2" -> "1-2"); anywhere else an en or em dash
# (or a horizontal bar) is a clause break, written " - " so that it becomes a separate "-"
# token: GloVe's "-" and "--" vectors are nearly identical (cosine 0.89), and "-" is far
# more frequent, hence better trained, than the rare "—".
_RANGE_DASH = re.compile(r"(?<=\d)\u2013(?=\d)")
_CLAUSE_DASH = re.compile(r"[\u2013\u2014\u2015]")
_DOTS = re.compile(r"\.{2,}")
_SPACE = re.compile(r"\s+")

# PTB clitics.  "n't" is split before the rest so "can't" -> "ca n't" and "won't" ->
# "wo n't", exactly GloVe's tokens.  The look-behind keeps a bare "'s" (a quote) untouched.
_NT = re.compile(r"(?<=[^\W_])n't\b")
_CLITIC = re.compile(r"(?<=[^\W_])'(s|m|d|ll|re|ve)\b")

# Stutters and reduplications ("you-you", "i-i-i", "no-no-no", "wh-what") are frequent in
# transcribed speech and almost never in GloVe as one token, while every piece is: a
# hyphen whose next part repeats (or continues) the previous one is split off as "-".
_STUTTER = re.compile(r"\b([^\W_]+)-(?=\1)")

# One token, in order of preference:
_TOKEN = re.compile(
    r"""
      (?:[^\W\d_]\.){2,}                  # dotted acronyms: u.s. a.m. o.k. t.v.
    | (?:mr|mrs|ms|dr|st|jr|sr|vs|prof|mt|etc|jan|feb|aug|sept|oct|nov|dec)\.(?=\s|$)
    | n't | 'n' | '(?:s|m|d|ll|re|ve|em|cause|til|twas|n|90s|80s|70s|60s)\b  # clitics, 'em
    | \d+(?:[.,:/]\d+)+                   # 1,000  1.5  3:00  9/11
    | y'(?=[^\W_])                        # y'know, y'all -> y' know (PTB; GloVe has y')
    | [^\W_]+(?:[-'][^\W_]+)*             # words, hyphenated words, o'clock
    | \.\.\.                              # ellipsis (runs of dots were normalised to ...)
    | [^\w\s]                             # any other punctuation or symbol, one per token
    | _                                   # underscore (excluded from \w-based words above)
    """,
    re.VERBOSE,
)


def normalize(text: str) -> str:
    """Map typographic variants to the ASCII forms GloVe has, NFKC-normalise, tidy spaces.

    Curly quotes become ``'`` and ``"``; an en dash between digits becomes ``-`` and any
    other en/em dash becomes `` - ``; ``…`` and runs of two or more dots become ``...``;
    non-breaking and other Unicode spaces become a plain space (NFKC plus whitespace
    collapsing).  Case is kept: lowercasing belongs to :func:`tokenize`, so callers can
    still show the normalised text to users.
    """
    text = text.translate(_CHAR_MAP)
    if "\u2013" in text or "\u2014" in text or "\u2015" in text:
        text = _RANGE_DASH.sub("-", text)
        text = _CLAUSE_DASH.sub(" - ", text)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if ".." in text:
        text = _DOTS.sub("...", text)
    return _SPACE.sub(" ", text).strip()


def tokenize(text: str) -> list[str]:
    """Normalise, lowercase and split ``text`` into GloVe-6B-style (PTB) tokens.

    >>> tokenize("I’m sure Joey's right… don't you—can't you see?")
    ['i', "'m", 'sure', 'joey', "'s", 'right', '...', 'do', "n't", 'you', '-', 'ca', "n't", 'you', 'see', '?']
    """
    text = normalize(text).lower()
    if "'" in text:
        text = _NT.sub(" n't", text)
        text = _CLITIC.sub(r" '\1", text)
    if "-" in text:
        text = _STUTTER.sub(r"\1 - ", text)
    return _TOKEN.findall(text)
