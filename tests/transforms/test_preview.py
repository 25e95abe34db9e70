from PIL import Image, ImageDraw

from transforms.preview import THUMB, draw_contact_sheet, fit_caption, thumbnail


def test_a_long_caption_is_cut_in_the_middle_to_fit_its_cell():
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    assert fit_caption(draw, "magenta_04, alpha 1.00", THUMB) == "magenta_04, alpha 1.00"
    long = "a_painting_with_a_long_name.png, alpha 0.75"
    cut = fit_caption(draw, long, THUMB)
    assert draw.textlength(long) > THUMB >= draw.textlength(cut)
    assert "..." in cut and cut.startswith("a_painting") and cut.endswith("alpha 0.75")
    assert len(fit_caption(draw, "x" * 500, 3)) == 1


def test_contact_sheet_lays_out_one_row_per_source():
    photo = thumbnail(Image.new("RGB", (400, 200), (200, 10, 10)))
    sheet = draw_contact_sheet([("a.jpg", photo, [("s, alpha 1.00", photo)] * 3), ("b.jpg", photo, [])])
    assert sheet.width == 4 * (THUMB + 8) and photo.shape == (80, 160, 3)
    assert sheet.getpixel((4 + 10, 4 + 10)) == (200, 10, 10)  # the first original, top left
