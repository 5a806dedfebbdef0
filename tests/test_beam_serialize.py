"""serialize.runner: beam writes the local writer's bytes, shards and manifest alike, on Beam's
local runner in this process and with two worker processes (chips read and shards written
through Beam's filesystems, staged under --temp_location, a folder or an S3-compatible store,
and copied down)."""

import io
import shutil

import pytest

pytest.importorskip("apache_beam", reason="the 'beam' extra is not installed (make test installs it)")

from PIL import Image  # noqa: E402

from amazonia.data.kaggle import image_path  # noqa: E402
from amazonia.data.labels import encode_tags, read_tags_csv  # noqa: E402
from amazonia.data.records.beam_writer import write_split_beam  # noqa: E402
from amazonia.data.records.images import BadImageError  # noqa: E402
from amazonia.data.records.manifest import RecordsError  # noqa: E402
from amazonia.data.records.writer import write_split  # noqa: E402
from amazonia.data.synthetic.generate import generate_dataset  # noqa: E402
from tests.conftest import S3_ACCESS_KEY_ID, S3_BUCKET, S3_SECRET, file_digests  # noqa: E402

pytestmark = pytest.mark.slow

N_CHIPS = 90
SHAPE = dict(split="train", shard_mb=0.2)  # several shards
IN_PROCESS = ["--direct_running_mode=in_memory"]
TWO_PROCESSES = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Default chips, plus a PNG one (stored as it is), a truncated and a garbage one (skipped)."""
    root = tmp_path_factory.mktemp("raw")
    generate_dataset(root, N_CHIPS, seed=5, workers=1)
    buffer = io.BytesIO()
    Image.open(image_path(root, "train_1")).convert("RGBA").save(buffer, format="PNG")
    image_path(root, "train_1").write_bytes(buffer.getvalue())
    data = image_path(root, "train_2").read_bytes()
    image_path(root, "train_2").write_bytes(data[: len(data) // 3])
    image_path(root, "train_3").write_bytes(b"\x00" * 100)
    return root


@pytest.fixture(scope="module")
def rows(raw):
    return encode_tags(read_tags_csv(raw / "train_v2.csv"), val=0.2, test=0.2).table


@pytest.fixture(scope="module")
def local(raw, rows, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "train"
    manifest = write_split(rows, raw, out, **SHAPE)
    assert len(manifest.shards) > 2 and len(manifest.skipped) == 2 and manifest.formats["PNG"] == 1
    return file_digests(out)


def test_beam_in_process_writes_the_local_bytes(raw, rows, local, tmp_path):
    write_split_beam(rows, raw, tmp_path / "train", beam_options=IN_PROCESS, **SHAPE)
    assert file_digests(tmp_path / "train") == local


def test_beam_with_two_worker_processes_and_staging_writes_the_local_bytes(raw, rows, local, tmp_path):
    staging = tmp_path / "bucket"
    staging.mkdir()
    options = [*TWO_PROCESSES, f"--temp_location={staging}"]
    write_split_beam(rows, raw, tmp_path / "train", beam_options=options, **SHAPE)
    assert file_digests(tmp_path / "train") == local
    assert list(staging.iterdir()) == [], "the staged copy is removed once copied down"


def test_beam_staging_on_an_object_store_writes_the_local_bytes_and_leaves_no_litter(
    raw, rows, local, tmp_path, s3_endpoint
):
    import boto3

    credentials = dict(aws_access_key_id=S3_ACCESS_KEY_ID, aws_secret_access_key=S3_SECRET)
    options = [
        *IN_PROCESS,
        f"--temp_location=s3://{S3_BUCKET}/beam-tmp",
        f"--s3_endpoint_url={s3_endpoint}",
        f"--s3_access_key_id={S3_ACCESS_KEY_ID}",
        f"--s3_secret_access_key={S3_SECRET}",
        "--s3_region_name=us-east-1",
    ]
    write_split_beam(rows, raw, tmp_path / "train", beam_options=options, **SHAPE)
    assert file_digests(tmp_path / "train") == local
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **credentials)
    left = [item["Key"] for item in s3.list_objects_v2(Bucket=S3_BUCKET).get("Contents", [])]
    assert left == [], "the staged objects are deleted once copied down"


def test_on_bad_image_error_names_the_same_chip_and_touches_nothing(raw, rows, tmp_path):
    messages = []
    for name, write, extra in (
        ("local", write_split, {}),
        ("beam", write_split_beam, {"beam_options": IN_PROCESS}),
    ):
        out = tmp_path / name / "train"
        with pytest.raises(BadImageError) as caught:
            write(rows, raw, out, **{**SHAPE, "on_bad_image": "error"}, **extra)
        assert not out.parent.exists() or list(out.parent.iterdir()) == []
        messages.append(str(caught.value).replace(str(raw.resolve()), str(raw)))
    assert messages[0] == messages[1]
    assert "train_2" in messages[0] and "serialize.on_bad_image: skip" in messages[0]


def test_beam_reads_chips_it_cannot_open_as_skipped_like_local(raw, rows, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(raw, root)
    image_path(root, "train_4").unlink()
    digests = []
    for name, write, extra in (
        ("local", write_split, {}),
        ("beam", write_split_beam, {"beam_options": IN_PROCESS}),
    ):
        manifest = write(rows, root, tmp_path / name, **SHAPE, **extra)
        missing = {"image_name": "train_4", "reason": "cannot read: No such file or directory"}
        assert missing in manifest.skipped
        digests.append(file_digests(tmp_path / name))
    assert digests[0] == digests[1]


def test_workers_that_can_read_no_chip_stop_the_stage_naming_the_reason(rows, tmp_path):
    # What a remote runner sees of this machine's data/raw: a whole split "skipped".
    out = tmp_path / "train"
    with pytest.raises(RecordsError) as caught:
        write_split_beam(rows, tmp_path / "elsewhere", out, beam_options=IN_PROCESS, **SHAPE)
    assert "the workers could read none of the" in str(caught.value)
    assert "cannot read: No such file or directory" in str(caught.value)
    assert "a shared filesystem" in str(caught.value)
    assert not out.exists()
