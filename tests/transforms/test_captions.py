"""Caption normalisation and filtering."""

import pytest

from transforms.captions import CaptionFilter, clean_caption, detect_language, split_hashtag


@pytest.mark.parametrize(
    "tag, words",
    [
        ("joanmiro", ("joan", "miro")),
        ("JoanMiro", ("joan", "miro")),
        ("fundaciojoanmiro", ("fundacio", "joan", "miro")),
        ("JoanMiróArt2024", ("joan", "miró", "art", "2024")),
        ("miró", ("miró",)),  # the ASCII word list would cut it to "mir"
        ("MIRO", ("miro",)),
        ("HTMLParser", ("html", "parser")),
        ("arte_contemporaneo", ("arte", "contemporaneo")),
    ],
)
def test_split_hashtag(tag, words):
    assert split_hashtag(tag) == words


def test_clean_caption_strips_and_counts_and_keeps_accents():
    caption = clean_caption(
        "Visiting the  Fundació\ntoday 🔥🔥 with @anna.b — https://t.co/x www.miro.org #JoanMiró #joanmiro ❤️"
    )
    assert caption.text == "visiting the fundació today with — joan miró joan miro"
    assert caption.prose == "visiting the fundació today with —"
    assert (caption.urls, caption.mentions, caption.emoji) == (2, 1, 3)
    assert caption.hashtags == ("JoanMiró", "joanmiro")
    assert caption.words == 9


def test_an_email_address_is_not_a_mention():
    assert clean_caption("write to a@b.com").mentions == 0


def test_none_and_junk_captions_are_empty():
    assert clean_caption(None).text == ""
    assert clean_caption("🔥🔥 @someone https://t.co/xyz ★").text == ""


def test_caption_filter_reasons():
    keep = CaptionFilter(min_words=3, languages=frozenset({"en", "es", "ca"}))
    assert keep.rejection(clean_caption(""))[0] == "empty_caption"
    assert keep.rejection(clean_caption("#art #miro"))[0] == "too_few_words"
    assert keep.rejection(clean_caption("ein schönes Bild von Joan Miró im Museum"))[0] == "language"
    assert keep.rejection(clean_caption("ジョアン・ミロの絵画はとても美しいです #joanmiro"))[0] == "language"
    assert keep.rejection(clean_caption("La Constel·lació de Miró és preciosa #joanmiro")) is None
    assert keep.rejection(clean_caption("joan miro #art #joanmiro")) is None  # too little prose to judge: kept
    assert CaptionFilter().rejection(clean_caption("ein schönes Bild von Joan Miró im Museum")) is None


def test_detect_language_abstains_on_short_prose():
    assert detect_language("joan miro")[0] == "und"
    assert detect_language("a beautiful painting by joan miro at the museum")[0] == "en"


def test_unknown_language_codes_are_refused():
    with pytest.raises(ValueError, match="unknown language code"):
        CaptionFilter(languages=frozenset({"english"}))


@pytest.mark.parametrize(
    "caption",
    [
        "\x1b[31mred\x1b[0m miro painting",  # with the ESC byte
        "[31mred[0m miro painting",  # what is left when something stripped the ESC bytes
        "\x1b[1;31mred\x1b[m miro \x1b]0;title\x07painting",  # bold red, reset, a window title (OSC)
        "\x9b31mred\x9b0m miro painting",  # the one-byte C1 introducer
    ],
)
def test_ansi_escapes_do_not_survive(caption):
    cleaned = clean_caption(caption)
    assert cleaned.text == "red miro painting"
    assert "[" not in cleaned.text and "31m" not in cleaned.text and "title" not in cleaned.text
    assert cleaned.ansi >= 2


def test_brackets_that_are_no_escapes_stay():
    assert clean_caption("Miró [1940] and [5m] tall").text == "miró [1940] and [5m] tall"


def test_a_caption_longer_than_instagram_allows_is_rejected_before_it_is_cleaned():
    keep = CaptionFilter(max_chars=4096)
    assert keep.length_rejection("miro " * 200_000)[0] == "too_long"
    assert keep.length_rejection("miro " * 400) is None  # 2,000 characters: a real caption
    assert keep.length_rejection(None) is None
