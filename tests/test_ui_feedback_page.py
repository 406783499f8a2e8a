"""The Feedback page (AppTest): counts, leaderboard, pairs (delete one), export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from alignment.importers import import_hh_rlhf
from assistant.storage import Database, upgrade
from assistant.storage.pairs import list_pairs
from tests.fake_app import APP
from tests.shared_data import HH_FILE, shared_file

HH = HH_FILE


@pytest.fixture
def db(env_settings):
    database = Database(env_settings.resolved_database_url)
    upgrade(database)
    return database


@pytest.fixture
def page(env_settings, db):
    st.cache_resource.clear()

    def open_page() -> AppTest:
        at = AppTest.from_file(APP, default_timeout=180)
        at.run()
        at.switch_page("views/feedback.py").run()
        assert not at.exception, at.exception
        return at

    yield open_page
    st.cache_resource.clear()


@pytest.mark.slow
def test_empty_state(page):
    at = page()
    assert at.title[0].value == "Feedback"
    assert "No feedback yet" in at.info[0].value


@pytest.mark.slow
def test_counts_pairs_delete_and_export(page, db, tmp_path, env_settings):
    sample = tmp_path / "hh.jsonl"
    sample.write_text("".join(shared_file(HH).read_text().splitlines(keepends=True)[:30]))
    report = import_hh_rlhf(db, sample)
    assert report.imported == 30

    at = page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["imported pairs"] == "30"

    newest = list_pairs(db)[0]
    assert newest.origin == "imported"
    at.segmented_control(key="pairs_origin").set_value("feedback").run()
    assert not any(b.key and b.key.startswith("del_pair_") for b in at.button)  # none from chats
    at.segmented_control(key="pairs_origin").set_value("imported").run()
    at.button(key=f"del_pair_{newest.kind}_{newest.id}").click().run()
    assert len(list_pairs(db)) == 29

    at.selectbox(key="export_kind").set_value("preference")
    at.slider(key="export_test_fraction").set_value(0.0)
    at.button[-1].click().run()  # the form's Export button
    assert not at.exception, at.exception
    assert at.success and "Exported to" in at.success[0].value
    folder = Path(at.success[0].value.removeprefix("Exported to "))
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 29
    assert {"prompt", "chosen", "rejected"} <= set(rows[0])
    assert folder.resolve().is_relative_to(env_settings.data_dir.resolve())
