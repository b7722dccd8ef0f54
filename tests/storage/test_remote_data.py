"""Event files in a bucket: a glob on an s3:// URL is expanded on the bucket and the files are read through
uproot and s3fs, from a real S3 endpoint (moto's server on 127.0.0.1)."""

from __future__ import annotations

import numpy as np
import pytest

from crossfed.config import DataConfig, DatasetConfig
from crossfed.data import load_dataset, read_events
from crossfed.data.files import expand_files
from crossfed.errors import CrossfedError


def test_an_s3_glob_is_expanded_and_its_files_read_like_local_ones(samples, s3_bucket, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    for process in ("ttbar", "tth"):
        fs.put_file(str(samples["cms"][process]), f"{s3_bucket}/cms/{process}.root")
    fs.put_file(str(samples["atlas"]["ttbar"]), f"{s3_bucket}/atlas/ttbar.root")  # not matched

    pattern = f"s3://{s3_bucket}/cms/*.root"
    assert expand_files([pattern]) == [f"s3://{s3_bucket}/cms/ttbar.root", f"s3://{s3_bucket}/cms/tth.root"]

    remote, stats = read_events([pattern], "cms_nanoaod")
    local, _ = read_events([str(samples["cms"]["ttbar"]), str(samples["cms"]["tth"])], "cms_nanoaod")
    assert len(remote) == len(local) > 0 and stats.files == 2
    np.testing.assert_array_equal(remote.features, local.features)

    # Through the tensor cache too (remote files keyed by their ROOT UUID and size).
    data = DataConfig(cache_dir=str(tmp_path / "cache"))
    cached = load_dataset(DatasetConfig(files=[pattern]), "cms_nanoaod", data)
    np.testing.assert_array_equal(cached.features, local.features)

    with pytest.raises(CrossfedError, match=rf"s3://{s3_bucket}/lhcb/\*.root: no file matches this pattern"):
        expand_files([f"s3://{s3_bucket}/lhcb/*.root"])
