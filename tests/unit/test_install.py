"""environment.yml (conda users) and requirements.txt (make) must pin the same
versions."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pins(lines):
    return {
        l.split("==")[0].strip().lower(): l.split("==")[1].strip()
        for l in lines
        if "==" in l
    }


def test_environment_yml_matches_requirements():
    req = _pins(
        l.split("#")[0] for l in (ROOT / "requirements.txt").read_text().splitlines()
    )
    env = _pins(
        l.strip().lstrip("- ").split("#")[0]
        for l in (ROOT / "environment.yml").read_text().splitlines()
    )
    assert req["torch"] == "2.13.0"
    assert req == env
