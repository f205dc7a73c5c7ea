"""requirements.txt: floors are Colab's versions (the Colab-like check), ceilings above the suite's."""

import importlib.metadata
import re

import pytest

from utils.course import ROOT

COLAB_NAME = {"opencv-contrib-python-headless": "opencv-contrib-python"}
"""Colab has the contrib build with GUI; the course installs the headless one (same cv2)."""


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def requirements():
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)>=([0-9.]+),<([0-9.]+)", line.split("#")[0].strip())
        if match:
            found[match.group(1).lower()] = (match.group(2), match.group(3))
    return found


def colab_pins():
    pins = {}
    for line in (ROOT / "tools" / "colab-constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize("name", sorted(requirements()))
def test_floor_is_colabs_version_where_colab_has_the_package(name):
    floor, _ = requirements()[name]
    pinned = colab_pins().get(COLAB_NAME.get(name, name))
    if pinned is None:
        pytest.skip(f"Colab does not ship {name}")
    assert version_tuple(floor) == version_tuple(pinned)[: len(version_tuple(floor))]


@pytest.mark.parametrize("name", sorted(requirements()))
def test_the_suites_own_version_is_inside_the_range(name):
    floor, ceiling = requirements()[name]
    installed = version_tuple(importlib.metadata.version(name))
    assert version_tuple(floor) <= installed < version_tuple(ceiling)


def test_colab_pins_cover_the_three_cv2_packages_on_two_major_versions():
    pins = colab_pins()
    majors = {pins[name].split(".")[0] for name in ("opencv-python", "opencv-python-headless")}
    assert majors == {"5"} and pins["opencv-contrib-python"].startswith("4.")
