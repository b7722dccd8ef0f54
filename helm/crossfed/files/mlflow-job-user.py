"""Create the MLflow user that Ray jobs log as (an ordinary user, never an admin), or reset its password.

Runs in the MLflow pod before the server and migrates the auth database on the way. The Secret is the
truth: a changed password there takes effect at the pod's next start.
"""

import os
import sys

from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

username, password = os.environ["JOB_USERNAME"], os.environ["JOB_PASSWORD"]
if username == os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME"):
    sys.exit(f"the MLflow job user {username!r} is the admin: give Ray jobs an ordinary user of their own")

store = SqlAlchemyStore()
store.init_db(read_auth_config().database_uri)
if store.has_user(username):
    store.update_user(username, password=password, is_admin=False)
    print(f"MLflow job user {username!r}: password set from its Secret", flush=True)
else:
    store.create_user(username, password, is_admin=False)
    print(f"MLflow job user {username!r}: created", flush=True)
