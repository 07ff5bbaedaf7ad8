"""`python -m gates.score VERSION_JSON CACHE_DIR FEATURES ANSWER`: one version, in its own process.

The gate starts this for each version it judges (see gates/isolation.py). It loads the version
from the gate's private, digest-checked copy, predicts on the evaluation features and writes the
answer as Parquet, then predicts the row ranges the gate asks for while the gate times them.

It speaks JSON lines on the pipe that was its stdout; the model's own prints go to stderr.
"""

import ctypes
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

_PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 4, 24, 38
_CAPABILITY_VERSION_3 = 0x20080522


def forbid_inspection() -> None:
    """Make this process non-dumpable (Linux): other processes of the same user can then
    neither trace it nor read its memory or environment under /proc."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def drop_capabilities() -> None:
    """Give up every capability for good (Linux): a process running as root keeps its uid but
    can then neither trace other processes nor read what their non-dumpable flag hides, and
    no program it runs gets capabilities back."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    for capability in range(64):  # fails past the last one, and where there is none to drop
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    nothing = (ctypes.c_uint32 * 6)()
    if libc.capset(header, nothing) != 0:
        raise OSError(ctypes.get_errno(), "capset (dropping every capability) failed")


def main(argv: list[str]) -> int:
    """Run the protocol; the exit code is 0 only after the gate said `quit`."""
    forbid_inspection()
    drop_capabilities()
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _send(channel, {"event": "started"})
    version, cache_dir, features_path, answer_path = argv

    import gc

    import pandas as pd
    from threadpoolctl import threadpool_limits

    from registry.cache import ModelCache, VersionId
    from registry.loading import load_cached

    before = _own_names()
    try:
        model = load_cached(
            VersionId(**json.loads(version)), ModelCache(Path(cache_dir)), None, offline=True
        )
    except BaseException as exc:  # model code may raise anything, SystemExit included
        _send(channel, {"event": "load failed", "reason": f"{type(exc).__name__}: {_reason(exc)}"})
        return 1
    features = pd.read_parquet(features_path)
    answer = _answer(model.predict, features, Path(answer_path))
    if changed := _changed(before, _own_names()):
        answer = {"event": "tampered", "names": changed[:10]}
    _send(channel, answer)
    gc.collect()
    with threadpool_limits(limits=1):
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("quit"):
                return 0
            start, stop = request["rows"]
            model.predict(features.iloc[start:stop])
            _send(channel, {"event": "done"})
    return 1


def _own_names() -> dict[str, int]:
    """The identity of every name in the gate's and the registry's modules, all imported."""
    import importlib
    import pkgutil

    names: dict[str, int] = {}
    for package in ("gates", "registry"):
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, f"{package}."):
            if module.name == "gates.score" or module.name.endswith("__main__"):
                continue
            loaded = importlib.import_module(module.name)
            names |= {f"{module.name}.{k}": id(v) for k, v in vars(loaded).items()}
    return names


def _changed(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Names the model's code replaced or removed in the gate's and the registry's modules."""
    return sorted(name for name, identity in before.items() if after.get(name) != identity)


def _answer(predict: Any, features: Any, path: Path) -> dict[str, Any]:
    import pandas as pd

    try:
        output = predict(features)
    except Exception as exc:  # a failing candidate is a finding, not a crash
        return {"event": "no answer", "reason": f"predict failed: {_reason(exc)}"}
    if not isinstance(output, pd.DataFrame):
        return {
            "event": "no answer",
            "reason": f"predict returned {type(output).__name__}, not a DataFrame",
        }
    try:
        output.to_parquet(path, index=False)
    except Exception as exc:  # columns Parquet cannot hold are no contract answer
        return {"event": "no answer", "reason": f"the answer cannot be written: {_reason(exc)}"}
    return {"event": "answered", "rows": len(output)}


def _send(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _reason(exc: BaseException) -> str:
    """A short reason: MLflow's schema errors put the whole frame before the words that count."""
    text = str(exc).rsplit("Error: ", 1)[-1].strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
