"""Give serving its MLflow user: read-only, since it holds no grant (default_permission READ).

Run once MLflow's basic-auth server answers, as its admin (MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD); creates the user MLFLOW_SERVING_USERNAME (default `serving`) with
the password MLFLOW_SERVING_PASSWORD, or sets that password if the user exists already.
A server that is still starting (no answer, or a 5xx) is asked again for up to
MLFLOW_USERS_WAIT_S seconds (default 60); a refusal (4xx) ends it at once.
"""

import os
import sys
import time

import requests


def ask(method: str, url: str, deadline: float, **kwargs: object) -> requests.Response:
    """One request, repeated while the server is not up yet or answers 5xx."""
    while True:
        try:
            answer = requests.request(method, url, timeout=30, **kwargs)  # type: ignore[arg-type]
        except requests.ConnectionError as error:
            problem = f"no answer ({type(error).__name__})"
        else:
            if answer.status_code < 500:
                return answer
            problem = f"HTTP {answer.status_code}: {answer.text[:200]}"
        if time.monotonic() > deadline:
            sys.exit(f"MLflow did not set up users in time; last: {problem}")
        print(f"MLflow not ready for {method} {url.rsplit('/', 1)[-1]}: {problem}; again in 2 s")
        time.sleep(2)


def main() -> None:
    """Create or re-key serving's user; exit 1 with the server's answer if it refuses."""
    api = os.environ["MLFLOW_TRACKING_URI"].rstrip("/") + "/api/2.0/mlflow/users"
    admin = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    user = {
        "username": os.environ.get("MLFLOW_SERVING_USERNAME", "serving"),
        "password": os.environ["MLFLOW_SERVING_PASSWORD"],
    }
    deadline = time.monotonic() + float(os.environ.get("MLFLOW_USERS_WAIT_S", "60"))
    answer = ask("POST", f"{api}/create", deadline, json=user, auth=admin)
    if "RESOURCE_ALREADY_EXISTS" in answer.text:
        answer = ask("PATCH", f"{api}/update-password", deadline, json=user, auth=admin)
    if answer.status_code != 200:
        sys.exit(f"MLflow refused to set up user {user['username']}: {answer.text[:300]}")
    print(f"MLflow user {user['username']} is ready (read-only)")


if __name__ == "__main__":
    main()
