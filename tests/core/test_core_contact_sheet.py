from PIL import Image

from photogroup.contact_sheet import PAD, THUMB, contact_sheet


def solid(colour, size=(200, 100)):
    return Image.new("RGB", size, colour)


def test_one_row_per_group_with_each_groups_thumbnails():
    rows = [("g-a", [solid("red")] * 3), ("g-b", [solid("blue")])]
    sheet = contact_sheet(rows, per_row=4)
    assert sheet.mode == "RGB"
    assert sheet.height == PAD + 2 * (THUMB + PAD)
    # Row 1 holds red thumbnails, row 2 one blue one and white after it.
    middle = PAD + THUMB // 2
    first_thumb_x = sheet.width - 4 * (THUMB + PAD) - PAD + THUMB // 2
    assert sheet.getpixel((first_thumb_x, middle))[0] > 200
    assert sheet.getpixel((first_thumb_x, middle + THUMB + PAD))[2] > 200
    assert sheet.getpixel((first_thumb_x + THUMB + PAD, middle + THUMB + PAD)) == (255, 255, 255)


def test_rows_are_capped_at_per_row_thumbnails():
    wide = contact_sheet([("g", [solid("green")] * 20)], per_row=3)
    assert wide.width == contact_sheet([("g", [solid("green")] * 3)], per_row=3).width


def test_empty_input_gives_a_blank_white_sheet():
    sheet = contact_sheet([])
    assert sheet.height > 0 and sheet.getcolors() == [(sheet.width * sheet.height, (255,) * 3)]


def test_a_row_given_its_groups_size_draws_as_if_it_held_every_image():
    """The asset reads only the copies a row shows: with the group's size the sheet is the
    one every image would give, "+N more" included."""
    every = contact_sheet([("g", [solid("green")] * 20)], per_row=3)
    drawn = contact_sheet([("g", [solid("green")] * 3)], per_row=3, sizes=[20])
    assert drawn.tobytes() == every.tobytes()
    assert drawn.tobytes() != contact_sheet([("g", [solid("green")] * 3)], per_row=3).tobytes()
