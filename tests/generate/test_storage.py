"""Generated files written to S3 (a real moto server on 127.0.0.1, through s3fs): whole files, no leftovers."""

import socket

import pytest
import uproot

from crossfed.errors import CrossfedError
from crossfed.generate import generate, read_metadata
from crossfed.generate.recipe import make_recipe


@pytest.fixture
def bucket(monkeypatch):
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                            AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}").items():
        monkeypatch.setenv(name, value)
    import boto3

    boto3.client("s3").create_bucket(Bucket="events")
    yield "events"
    server.stop()


def test_recipe_writes_to_s3_from_ray_workers(bucket, tmp_path):
    """Two Ray workers (started after the endpoint is set, so they see it) write the chunks to the bucket."""
    import s3fs

    (tmp_path / "r.yaml").write_text(f"name: s3\noutput_dir: s3://{bucket}/study\nseed: 4\ndetectors: [atlas]\n"
                                     "workers: 2\nlabelled: {t: {signal: tth, background: ttbar, events: 120}}\n")
    summaries = make_recipe(tmp_path / "r.yaml", progress=False)
    assert all(len(s["nodes"]) == 1 and s["workers"] == 2 for s in summaries)  # ran as Ray tasks
    assert [s["path"] for s in summaries] == [f"s3://{bucket}/study/atlas/ttbar.root", f"s3://{bucket}/study/atlas/tth.root"]
    fs = s3fs.S3FileSystem()
    assert sorted(fs.find(f"{bucket}/study")) == [f"{bucket}/study/atlas/ttbar.root", f"{bucket}/study/atlas/tth.root"]
    local = tmp_path / "tth.root"
    fs.get_file(f"{bucket}/study/atlas/tth.root", str(local))
    assert uproot.open(local)["mini"].num_entries == 120 and read_metadata(local)["process"] == "tth"
    # Made again: the files are found finished (same request) and left alone.
    again = make_recipe(tmp_path / "r.yaml", progress=False)
    assert [s["resumed_chunks"] for s in again] == ["all", "all"]


def test_unwritable_s3_output_fails_before_generating(bucket):
    with pytest.raises(CrossfedError, match="s3://no-such-bucket/events.root: cannot write there"):
        generate("ttbar", "cms", 5, 1, "s3://no-such-bucket/events.root", workers=1, progress=False)
