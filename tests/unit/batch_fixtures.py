"""Shared pieces of the batch tests: a small API workflow, fast runner settings, fake-server fixtures."""

from __future__ import annotations

import re

import pytest

from likeness.tools.batch.fake_server import FakeComfy

WORKFLOW = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
    "12": {"class_type": "LoadImage", "inputs": {"image": "example.png"}, "_meta": {"title": "Load face"}},
    "10": {
        "class_type": "LikenessEdit",
        "inputs": {"model": ["4", 0], "image": ["12", 0], "strength_1": 0.0},
        "_meta": {"title": "Likeness edit"},
    },
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 0, "steps": 20, "model": ["10", 0]},
        "_meta": {"title": "KSampler"},
    },
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    "20": {"class_type": "Likeness_IdentityScore", "inputs": {"image": ["3", 0]}},
}
FAST = {"poll_interval": 0.01, "backoff_cap": 0.05, "request_timeout": 5.0}


@pytest.fixture()
def servers():
    made = []

    def make(n=1, **kw):
        made.extend(FakeComfy(**kw) for _ in range(n))
        return made[-n:]

    yield make
    for fake in made:
        if fake.alive:
            fake.kill()


@pytest.fixture()
def face_dir(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in ("alice", "bob"):
        (folder / f"{name}.png").write_bytes(name.encode() * 10)
    return folder


def sweep12(face_dir):
    return {
        "faces": {"folder": str(face_dir), "node": "Load face", "input": "image"},
        "sweep": [{"node": "Likeness edit", "input": "strength_1", "values": [-2, 0, 2], "name": "age"}],
        "seeds": {"node": "KSampler", "input": "seed", "values": [1, 2]},
    }


def seeds(n, extra=None):
    spec = {"seeds": {"node": "KSampler", "input": "seed", "values": list(range(1, n + 1))}}
    spec.update(extra or {})
    return spec


_DOUBLED = re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)
_A_VOWEL = re.compile(r"\b[Aa] (?=[aeioAEIO]\w)")


def assert_clear(message: str) -> None:
    """A user-facing message: no doubled word, no "a e4e"-style article, no list of more than 20 items."""
    assert not _DOUBLED.search(message), f"doubled word in: {message}"
    assert not _A_VOWEL.search(message), f"'a' before a vowel in: {message}"
    longest = max((len(part.split(", ")) for part in re.split(r"[;:\n()\[\]]", message)), default=0)
    assert longest <= 21, f"a list of {longest} items in: {message[:300]}"  # 20 items + "... and N more"
