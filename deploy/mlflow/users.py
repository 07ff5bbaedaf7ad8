"""Give serving its MLflow user: read-only, since it holds no grant (default_permission READ).

Run once MLflow's basic-auth server answers, as its admin (MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD); creates the user MLFLOW_SERVING_USERNAME (default `serving`) with
the password MLFLOW_SERVING_PASSWORD, or sets that password if the user exists already.
"""

import os
import sys

import requests


def main() -> None:
    """Create or re-key serving's user; exit 1 with the server's answer if it refuses."""
    api = os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow/users"
    admin = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    user = {
        "username": os.environ.get("MLFLOW_SERVING_USERNAME", "serving"),
        "password": os.environ["MLFLOW_SERVING_PASSWORD"],
    }
    answer = requests.post(f"{api}/create", json=user, auth=admin, timeout=30)
    if "RESOURCE_ALREADY_EXISTS" in answer.text:
        answer = requests.patch(f"{api}/update-password", json=user, auth=admin, timeout=30)
    if answer.status_code != 200:
        sys.exit(f"MLflow refused to set up user {user['username']}: {answer.text[:300]}")
    print(f"MLflow user {user['username']} is ready (read-only)")


if __name__ == "__main__":
    main()
