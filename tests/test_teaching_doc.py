"""docs/teaching.md is usable for a real class: its plans add up, its worksheet holds the Lesson's nine
questions, class day is one command, and it names no internal figure or function."""

from __future__ import annotations

import re

import pytest

from cxr_core import lesson
from cxr_core.config import PROJECT_ROOT

GUIDE = (PROJECT_ROOT / "docs" / "teaching.md").read_text()


def section(title: str) -> str:
    start = GUIDE.index(title)
    following = re.search(r"^#{2,3} ", GUIDE[start + len(title):], flags=re.MULTILINE)
    return GUIDE[start:start + len(title) + (following.start() if following else len(GUIDE))]


@pytest.mark.parametrize("minutes", [45, 90])
def test_each_plans_minutes_add_up_and_include_the_reading(minutes):
    plan = section(f"### {minutes}-minute plan")
    rows = [line.split("|")[1:-1] for line in plan.splitlines() if re.match(r"^\| \S.* \| \d+ \|$", line)]
    assert sum(int(row[-1]) for row in rows) == minutes
    assert "reading" in [row[0].strip() for row in rows]


def test_the_worksheet_holds_the_nine_questions_and_the_reading_instructions():
    sheet = section("## Worksheet")
    assert all(step.question in sheet for step in lesson.STEPS)
    assert "NORMAL or PNEUMONIA" in sheet and "how sure you are" in sheet


def test_class_day_is_one_command_and_preparing_is_one_too():
    day = section("## Class day: one command")
    (command,) = [line for line in day.splitlines() if line.startswith("CXR_DATA_DIR=")]
    assert "CXR_TEACHER_KEY=" in command and "--server.address 0.0.0.0" in command
    assert "python -m cxr_core lesson --prepare" in GUIDE and "python -m cxr_core lesson --check" in GUIDE
    assert "python -m cxr_core reads new" in GUIDE and "web browser, on the same network" in GUIDE


def test_no_internal_names_and_no_unmeasured_claims_about_training_in_class():
    for internal in ("server_cpu_s_per_view", "jobs.submit", "cxr_core/", "lesson_prep"):
        assert internal not in GUIDE
    assert "is fine" not in GUIDE and "never slows" not in GUIDE
    assert "0.03 batches a second against 0.90 alone" in GUIDE and "was not measured" in GUIDE
