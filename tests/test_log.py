"""log.step(): a step that finished says done with its duration; one that failed says so."""

from __future__ import annotations

import logging
import re

import pytest

from b2c_builder.errors import FetchError
from b2c_builder.log import step
from tests.localmirror import capture_log


def test_a_finished_step_is_done_with_its_duration() -> None:
    with capture_log(logging.INFO) as messages, step("Outer"), step("Inner"):
        pass
    assert messages[:2] == ["‣ Outer", "  ‣ Inner"]
    assert re.fullmatch(r"    Inner done in \d+\.\ds", messages[2]), messages
    assert re.fullmatch(r"  Outer done in \d+\.\ds", messages[3]), messages
    assert len(messages) == 4


def test_a_failed_step_says_failed_and_never_done() -> None:
    with capture_log(logging.INFO) as messages:
        with pytest.raises(FetchError, match="cannot download"), step("Outer"):
            with step("Finished"):
                pass
            with step("Fetching"):
                raise FetchError("cannot download x")
        with step("Next"):  # the indentation is back at the top
            pass
    assert [m for m in messages if "done" not in m] == [
        "‣ Outer",
        "  ‣ Finished",
        "  ‣ Fetching",
        "    Fetching failed",
        "  Outer failed",
        "‣ Next",
    ]
    assert [m.split(" done")[0] for m in messages if "done" in m] == ["    Finished", "  Next"]


def test_an_interrupted_step_says_interrupted() -> None:
    with (
        capture_log(logging.INFO) as messages,
        pytest.raises(KeyboardInterrupt),
        step("Extracting"),
    ):
        raise KeyboardInterrupt
    assert messages == ["‣ Extracting", "  Extracting interrupted"]
