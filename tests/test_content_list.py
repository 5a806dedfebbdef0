"""data/raw.md5: md5sum's own list of a folder, the same for the same files and different
for any change DVC would see in the folder."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from amazonia.data.content_list import content_list, list_files


def _folder(root, files: dict[str, bytes]):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


FILES = {
    "train_v2.csv": b"image_name,tags\n",
    "train-jpg/train_0.jpg": b"\xff\xd8 a chip",
    "train-jpg/train_10.jpg": b"\xff\xd8 another",
    "train-jpg/deeper/with space.jpg": b"",
    "train-jpg/back\\slash.jpg": b"odd",
    "train-jpg/new\nline.jpg": b"odder",
}


@pytest.mark.skipif(shutil.which("md5sum") is None, reason="no md5sum (GNU coreutils) to compare with")
def test_the_list_is_what_md5sum_writes_and_md5sum_checks_it(tmp_path):
    folder = _folder(tmp_path / "raw", FILES)
    listed = content_list(folder, workers=2)
    names = list_files(folder)
    assert sorted(names) == names == sorted(FILES)
    by_md5sum = subprocess.run(["md5sum", "--", *names], cwd=folder, capture_output=True, check=True)
    assert listed.encode() == by_md5sum.stdout
    (tmp_path / "raw.md5").write_text(listed)
    checked = subprocess.run(["md5sum", "--check", "--quiet", "../raw.md5"], cwd=folder, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_list_changes_with_any_byte_name_or_file_and_only_then(tmp_path):
    first = content_list(_folder(tmp_path / "a", FILES))
    # The same files written in another order, at other times: the same list.
    assert content_list(_folder(tmp_path / "b", dict(reversed(FILES.items())))) == first
    seen = {first}
    for change in (
        lambda root: (root / "train-jpg/train_0.jpg").write_bytes(b"\xff\xd8 a chip, changed"),
        lambda root: (root / "train-jpg/train_10.jpg").rename(root / "train-jpg/train_11.jpg"),
        lambda root: (root / "train-jpg/train_12.jpg").write_bytes(b""),
        lambda root: (root / "train-jpg/deeper/with space.jpg").unlink(),
    ):
        change(tmp_path / "b")
        listed = content_list(tmp_path / "b")
        assert listed not in seen
        seen.add(listed)
