"""The batch manifest: a snapshot plus an append-only journal, so a state change costs O(1), not O(points)."""

from __future__ import annotations

import json

import pytest

from likeness.models.errors import LikenessError
from likeness.tools.batch.manifest import JOURNAL_NAME, MANIFEST_NAME, Manifest


def _manifest(tmp_path, n=3):
    manifest = Manifest.open(tmp_path)
    recs = [manifest.record(f"p{i}", i, f"seed={i}", {"3.seed": i}) for i in range(n)]
    manifest.save()
    return manifest, recs


def test_updates_go_to_the_journal_and_are_replayed(tmp_path):
    manifest, recs = _manifest(tmp_path)
    snapshot = (tmp_path / MANIFEST_NAME).read_text()
    recs[1].status, recs[1].server = "queued", "http://a"
    manifest.update(recs[1])
    recs[1].status = "done"
    manifest.update(recs[1])
    assert (tmp_path / MANIFEST_NAME).read_text() == snapshot  # the snapshot is not rewritten per change
    assert len((tmp_path / JOURNAL_NAME).read_text().splitlines()) == 2
    again = Manifest.open(tmp_path)
    assert (again.records["p1"].status, again.records["p1"].server) == ("done", "http://a")
    assert again.records["p0"].status == "pending" and again.nonce == manifest.nonce and again.seq == 2
    again.save()  # folds the journal into the snapshot
    assert not (tmp_path / JOURNAL_NAME).exists()
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["points"]["p1"]["status"] == "done"


def test_a_line_cut_short_by_a_crash_is_ignored_but_a_bad_middle_line_is_an_error(tmp_path):
    manifest, recs = _manifest(tmp_path)
    recs[0].status = "queued"
    manifest.update(recs[0])
    manifest.close()
    with (tmp_path / JOURNAL_NAME).open("a") as fh:
        fh.write('{"seq": 2, "point": {"point_id": "p2", "ind')  # the process died mid-write
    assert Manifest.open(tmp_path).records["p2"].status == "pending"
    assert Manifest.open(tmp_path).records["p0"].status == "queued"
    with (tmp_path / JOURNAL_NAME).open("a") as fh:
        fh.write("\n" + json.dumps({"seq": 3, "point": {"point_id": "p1", "index": 1}}) + "\n")
    with pytest.raises(LikenessError, match=r"line 2 of .*manifest.journal is unreadable"):
        Manifest.open(tmp_path)


def test_journal_lines_older_than_the_snapshot_are_skipped(tmp_path):
    """A crash between writing the snapshot and deleting the journal must not roll points back."""
    manifest, recs = _manifest(tmp_path)
    recs[0].status = "queued"
    manifest.update(recs[0])
    old_journal = (tmp_path / JOURNAL_NAME).read_text()
    recs[0].status = "done"
    manifest.update(recs[0])
    manifest.save()
    (tmp_path / JOURNAL_NAME).write_text(old_journal)  # as if the unlink never happened
    assert Manifest.open(tmp_path).records["p0"].status == "done"


def test_the_journal_is_folded_in_when_it_grows(tmp_path):
    manifest, recs = _manifest(tmp_path, n=2)
    for i in range(1001):
        recs[i % 2].attempts = i
        manifest.update(recs[i % 2])
    assert not (tmp_path / JOURNAL_NAME).exists()  # folded at line 1001
    assert Manifest.open(tmp_path).records["p0"].attempts == 1000


def test_a_journal_without_its_snapshot_is_refused(tmp_path):
    (tmp_path / JOURNAL_NAME).write_text("{}\n")
    with pytest.raises(LikenessError, match="exists without .*manifest.json; move both away"):
        Manifest.open(tmp_path)
