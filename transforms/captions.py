"""Caption normalisation for the corpus: raw Instagram caption → the ``text`` a text model learns from.

``clean_caption`` strips terminal escape codes, URLs, @mentions and emoji (counting each), turns every hashtag
into its words in place (``#joanmiro`` → ``joan miro``, ``#JoanMiroArt`` → ``joan miro art``), keeps accents
(``Miró`` stays ``miró``: Unicode NFC throughout, no ASCII folding), lowercases and collapses whitespace.
``CaptionFilter`` then decides whether the caption is worth keeping: not longer than a caption can be (checked
before cleaning), enough words, and a language in the keep-list when one is given (``py3langid``).

The word list (``wordsegment``, ~1 s and ~100 MB to load) and the language model (``py3langid``, ~1 s)
load once per process, on first use or through ``load_models()`` from a DoFn's ``setup``.
"""

import functools
import re
import threading
import unicodedata
from dataclasses import dataclass

import emoji

# http(s)://… and www.… up to the next space; bare domains with a path (miro.org/x) too, since
# captions often drop the scheme. Trailing punctuation stays with the sentence.
URL_RE = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|es|cat|fr|io|ly|co|me)/\S*", re.I)
# Instagram usernames: letters, digits, _ and single dots, up to 30; not inside e-mail addresses.
MENTION_RE = re.compile(r"(?<![\w@.])@[\w](?:[\w.]{0,28}[\w])?")
# instaloader's own hashtag pattern (structures._hashtag_regex): Unicode word characters after '#'.
HASHTAG_RE = re.compile(r"#(\w{1,150})")
WORD_RE = re.compile(r"\w+")
# Terminal colour codes pasted from a console (ECMA-48): CSI sequences with ESC [ or the one-byte C1 introducer,
# OSC strings (ESC ] ... BEL or ESC \), other two-byte escapes, and SGR codes whose ESC byte something
# already stripped ("[31m"; not "[5m]", which is a bracketed measure).
ANSI_RE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\^_]|\[[0-9;]{0,16}m(?!\])"
)
SPACE_RE = re.compile(r"\s+")

# langid needs some prose before its answer means anything: on "joan miro" it answers Frisian with
# p=0.09. Shorter prose, or a less confident answer, is "und" (undetermined) and kept. Counted in
# letters, not words: Japanese or Chinese prose has no spaces between words.
LANGUAGE_MIN_LETTERS = 15
LANGUAGE_MIN_CONFIDENCE = 0.5
# Instagram caps a caption at 2,200 characters. A longer one did not come from Instagram as one caption (a wrong
# file, captions run together, spam); twice the cap leaves room for other ways of counting and still keeps a
# 1 MB "caption" out of the text model and out of the cleaner's regexes.
MAX_CAPTION_CHARS = 4096


@dataclass(frozen=True)
class CleanCaption:
    """A normalised caption. ``text`` is what the clean corpus stores; ``prose`` is the same without the
    hashtag words (what language detection reads). The counts say what was removed."""

    text: str
    prose: str
    words: int
    hashtags: tuple[str, ...]
    urls: int
    mentions: int
    emoji: int
    ansi: int = 0


def clean_caption(caption: str | None, *, lowercase: bool = True) -> CleanCaption:
    """Normalise one caption (``None`` reads as empty)."""
    text = unicodedata.normalize("NFC", caption or "")
    text, ansi = ANSI_RE.subn(" ", text)
    text, urls = URL_RE.subn(" ", text)
    text, mentions = MENTION_RE.subn(" ", text)
    emoji_count = emoji.emoji_count(text)
    text = emoji.replace_emoji(text, replace=" ")
    # What emoji leaves behind: stray variation selectors, zero-width joiners, dingbats like ★.
    text = "".join(" " if _is_symbol_or_control(char) else char for char in text)

    hashtags = tuple(match.group(1) for match in HASHTAG_RE.finditer(text))
    with_words = HASHTAG_RE.sub(lambda match: " " + " ".join(split_hashtag(match.group(1))) + " ", text)
    prose = HASHTAG_RE.sub(" ", text)
    with_words, prose = _normalise_space(with_words, lowercase), _normalise_space(prose, lowercase)
    words = sum(1 for token in WORD_RE.findall(with_words) if not token.isdigit())
    return CleanCaption(with_words, prose, words, hashtags, urls, mentions, emoji_count, ansi)


def _is_symbol_or_control(char: str) -> bool:
    category = unicodedata.category(char)
    return category == "So" or (category[0] == "C" and not char.isspace())


def _normalise_space(text: str, lowercase: bool) -> str:
    text = SPACE_RE.sub(" ", text).strip()
    return text.lower() if lowercase else text


@functools.lru_cache(maxsize=65536)
def split_hashtag(tag: str) -> tuple[str, ...]:
    """A hashtag (without ``#``) → its words, lowercased, accents kept.

    camelCase and letter/digit boundaries split first (``JoanMiróArt2024`` → joan, miró, art, 2024);
    each all-ASCII lowercase run is then segmented with the ``wordsegment`` word list (``joanmiro`` →
    joan, miro). Runs with accented letters are kept whole: the word list is ASCII-only and would cut
    ``miró`` to ``mir``. Hashtags repeat across a corpus (#joanmiro is in every post), hence the cache.
    """
    words: list[str] = []
    for part in _camel_parts(tag.replace("_", " ")):
        if part.isascii() and part.isalpha():
            words.extend(_segmenter().segment(part))
        else:
            words.append(part)
    return tuple(words)


def _camel_parts(tag: str) -> list[str]:
    """Split at space, lower→Upper, UPPER→Upperlower (``HTMLParser``) and letter↔digit boundaries; lowercase."""
    parts: list[str] = []
    current = ""
    for i, char in enumerate(tag):
        if char.isspace():
            parts.append(current)
            current = ""
            continue
        if current:
            prev = current[-1]
            nxt = tag[i + 1] if i + 1 < len(tag) else ""
            boundary = (
                (prev.islower() and char.isupper())
                or (prev.isupper() and char.isupper() and nxt.islower())
                or (prev.isdigit() != char.isdigit())
            )
            if boundary:
                parts.append(current)
                current = ""
        current += char
    parts.append(current)
    return [part.lower() for part in parts if part]


@dataclass(frozen=True)
class CaptionFilter:
    """Which captions to keep: at most ``max_chars`` characters as posted, at least ``min_words`` words (hashtag
    words count) and, when ``languages`` is given, prose in one of them (ISO 639-1 codes as py3langid names them)."""

    min_words: int = 3
    languages: frozenset[str] | None = None
    min_confidence: float = LANGUAGE_MIN_CONFIDENCE
    max_chars: int = MAX_CAPTION_CHARS

    def __post_init__(self):
        if self.languages is not None:
            unknown = set(self.languages) - set(_language_identifier().labels)
            if unknown:
                raise ValueError(f"unknown language code(s) {sorted(unknown)}; py3langid knows e.g. en, es, ca, fr")

    def length_rejection(self, caption: str | None) -> tuple[str, str] | None:
        """``("too_long", detail)`` for a raw caption longer than ``max_chars``: checked before cleaning, which
        would spend time on it for nothing."""
        if caption is not None and len(caption) > self.max_chars:
            return "too_long", f"{len(caption)} characters, above {self.max_chars}"
        return None

    def rejection(self, caption: CleanCaption) -> tuple[str, str] | None:
        """``(reason, detail)`` when the caption should be dropped, else ``None``."""
        if not caption.text:
            return "empty_caption", "nothing left after removing URLs, mentions and emoji"
        if caption.words < self.min_words:
            return "too_few_words", f"{caption.words} < {self.min_words}"
        if self.languages is not None:
            language, confidence = detect_language(caption.prose, self.min_confidence)
            if language != "und" and language not in self.languages:
                return "language", f"{language} ({confidence:.2f})"
        return None


def detect_language(prose: str, min_confidence: float = LANGUAGE_MIN_CONFIDENCE) -> tuple[str, float]:
    """``(ISO code, probability)``, or ``("und", p)`` when the prose is too short or the answer too unsure."""
    if sum(char.isalpha() for char in prose) < LANGUAGE_MIN_LETTERS:
        return "und", 0.0
    language, confidence = _language_identifier().classify(prose)
    return (language, confidence) if confidence >= min_confidence else ("und", confidence)


_lock = threading.Lock()


@functools.cache
def _segmenter():
    import wordsegment

    with _lock:
        segmenter = wordsegment.Segmenter()
        segmenter.load()
    return segmenter


@functools.cache
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    with _lock:
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def load_models() -> None:
    """Load the word list and the language model now (in a DoFn's ``setup``) rather than on the first row."""
    _segmenter()
    _language_identifier()
