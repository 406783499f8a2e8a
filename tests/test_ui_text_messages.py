"""Messages shown with st.error and kin (ui.text.error_text)."""

from __future__ import annotations

from ui.text import error_text


def test_thumbs_become_the_buttons_icons_and_code_stays_code():
    shown = error_text("`train kto` needs rows of each label (it has 3 of one and none 👎). "
                       "KTO learns from 👍 and 👎; run `assistant data import hh-rlhf FILE`.")
    assert "👍" not in shown and "👎" not in shown  # Debian's Chromium has no emoji font
    assert "none :material/thumb_down:)" in shown and "from :material/thumb_up: and" in shown
    assert shown.startswith("`train kto` needs")  # a code span, not escaped backticks
    assert "run `assistant data import hh-rlhf FILE`." in shown


def test_everything_else_is_escaped_as_in_labels():
    shown = error_text("report_*final*.pdf: [x](http://e.example) in `a*b`")
    assert shown == r"report\_\*final\*.pdf: \[x\](http\://e.example) in `a*b`"
