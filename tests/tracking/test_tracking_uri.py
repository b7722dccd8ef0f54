"""The one tracking-URI rule: the config's tracking.uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db; a relative
SQLite path made absolute."""

import os
import subprocess
import sys
from pathlib import Path

RULE = ("from crossfed.config import TrackingConfig; from crossfed import tracking; import mlflow; "
        "print(tracking.tracking_uri(TrackingConfig(uri={uri!r}))); "
        "mlflow.set_tracking_uri('sqlite:///elsewhere.db'); print(tracking.tracking_uri())")


def _resolve(tmp_path, config_uri, environment_uri):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if environment_uri:
        env["MLFLOW_TRACKING_URI"] = environment_uri
    out = subprocess.run([sys.executable, "-c", RULE.format(uri=config_uri)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1]


def test_config_then_environment_then_local_sqlite(tmp_path):
    local = f"sqlite:///{Path(tmp_path).resolve() / 'mlflow.db'}"
    given = f"sqlite:///{Path(tmp_path).resolve() / 'given.db'}"  # a relative SQLite path is made absolute
    assert _resolve(tmp_path, "sqlite:///given.db", "http://server:5000")[0] == given
    # mlflow.set_tracking_uri() rewrites the variable in the process; the rule keeps the user's value.
    assert _resolve(tmp_path, None, "http://server:5000") == ("http://server:5000", "http://server:5000")
    assert _resolve(tmp_path, None, None) == (local, local)

