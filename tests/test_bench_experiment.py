"""The experiment benchmark judges its goals from recorded parts alone; its clients, its
accounting of the log and its S3 switch do what the goals rely on."""

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench import experiment, options


def test_committed_goals_are_judged_from_the_committed_parts() -> None:
    results = json.loads(experiment.RESULTS.read_text())
    judged = experiment.goals(results["config"], results["parts"])
    assert [asdict(goal) for goal in judged] == results["goals"]
    assert {goal.id for goal in judged} >= {"overhead-rps", "sigterm", "sigkill-lost", "report"}


def test_accounting_counts_missing_unanswered_and_duplicated_rows() -> None:
    answered = {("a", 0), ("a", 1), ("b", 0)}
    logged = Counter({("a", 0): 2, ("b", 0): 1, ("c", 0): 1})
    found = experiment.accounting(answered, logged)
    assert (found["missing"], found["extra"], found["duplicated"]) == (1, 1, 1)
    assert (found["answered_rows"], found["logged_rows"]) == (3, 4)
    assert not experiment._equal(found)
    assert experiment._equal(experiment.accounting(answered, Counter(answered)))


def _kill(
    lost: int, bound: int, unshipped: int = 0, shipped_s: float | None = 3.0
) -> dict[str, Any]:
    return {
        "answered_rows_in_last_flush": bound,
        "answered_rows_per_s_5s_before": float(bound),
        "spooled_rows": 500,
        "spooled_not_shipped": unshipped,
        "spool_shipped_after_restart_s": shipped_s,
        "accounting": {"missing": lost, "duplicated": 0},
    }


def test_sigkill_goals_want_each_loss_within_its_last_flush_and_the_spool_shipped() -> None:
    def met(*kills: dict[str, Any]) -> list[bool | None]:
        part = {"flush_s": 1.0, "kills": list(kills)}
        return [goal.met for goal in experiment.sigkill_goals(part)]

    assert met(_kill(100, 120), _kill(0, 90)) == [True, True]
    assert met(_kill(100, 120), _kill(91, 90)) == [False, True]
    assert met(_kill(100, 120, unshipped=1)) == [True, False]
    assert met(_kill(100, 120, shipped_s=None)) == [True, False]


def _store(during_p99: float = 10.0, failed: int = 0, failures: float = 3.0) -> dict[str, Any]:
    def window(p99: float) -> dict[str, Any]:
        return {"n": 1000, "p50_ms": 5.0, "p99_ms": p99, "max_ms": 20.0}

    rows = {"answered_rows": 10, "logged_rows": 10, "missing": 0, "extra": 0, "duplicated": 0}
    return {
        "outage_s": 60.0,
        "before_s": 60.0,
        "clients": 8,
        "latency": {"before": window(10.0), "during": window(during_p99), "after": window(10.0)},
        "requests": 1000,
        "failed": failed,
        "ship_failures_since_down": failures,
        "spool_bytes_max": 2**20,
        "dropped_rows": 0.0,
        "all_shipped_after_store_back_s": 12.0,
        "accounting": rows,
        "cores": {phase: {"server_core_others": 0.01} for phase in ("before", "during", "after")},
    }


def test_store_goals_fail_on_a_slower_p99_a_failed_request_or_an_outage_not_seen() -> None:
    def met(part: dict[str, Any]) -> list[bool | None]:
        return [goal.met for goal in experiment.store_goals(part)]

    assert met(_store()) == [True, True, True]
    assert met(_store(during_p99=11.5)) == [False, True, True]
    assert met(_store(failed=1)) == [True, False, True]
    assert met(_store(failures=0)) == [True, True, False]
    shared = _store()
    shared["cores"]["during"]["server_core_others"] = 0.3
    assert met(shared) == [False, True, True]


def _wrk(rps: float, p99: float, others: float | None = 0.0, errors: int = 0) -> dict[str, Any]:
    cores = None if others is None else {"server_core_others": others}
    return {"rps": rps, "p99_ms": p99, "errors": errors, "cpu_us_per_request": 1000.0} | (
        {"cores": cores} if cores else {}
    )


def _overhead(
    on: list[dict[str, Any]], off: list[dict[str, Any]], loadavg: float = 1.0
) -> dict[str, Any]:
    return {
        "rows": 1,
        "connections": 32,
        "repeats": len(on),
        "duration_s": 10.0,
        "log_metrics": {},
        "runs": {experiment.ON: on, experiment.OFF: off},
        "loadavg": {"start": [loadavg, 1.0, 1.0], "end": [loadavg, 1.0, 1.0]},
    }


def test_overhead_goals_compare_medians_of_clean_pairs_and_count_errors() -> None:
    on = [_wrk(960, 50), _wrk(700, 80), _wrk(950, 52), _wrk(100, 900, others=0.4)]
    off = [_wrk(1000, 48), _wrk(990, 49), _wrk(400, 90), _wrk(1000, 50)]
    rps, p99, cpu = experiment.overhead_goals(_overhead(on, off))
    assert (rps.met, p99.met, cpu.met) == (True, True, None)
    assert "0.960x" in rps.measured  # the fourth pair shared the server's core: left out
    on[0]["errors"] = 1
    assert experiment.overhead_goals(_overhead(on, off))[0].met is False


def test_overhead_goals_are_not_met_without_enough_clean_pairs() -> None:
    on = [_wrk(1000, 50, others=0.3), _wrk(1000, 50), _wrk(1000, 50)]
    off = [_wrk(1000, 50), _wrk(1000, 50), _wrk(1000, 50, others=0.2)]
    rps, p99, _ = experiment.overhead_goals(_overhead(on, off))
    assert (rps.met, p99.met) == (False, False)
    assert "INCONCLUSIVE" in rps.measured
    # records without core attribution: the part's load average decides
    plain = [_wrk(1000, 50, others=None) for _ in range(3)]
    assert experiment.overhead_goals(_overhead(plain, plain))[0].met is True
    assert experiment.overhead_goals(_overhead(plain, plain, loadavg=9.0))[0].met is False


@pytest.fixture
def echo_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server answering 200 to every POST, keeping the X-Request-IDs it saw."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["X-Request-ID"])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_clients_stop_at_their_limit_and_send_each_id_once(
    echo_server: tuple[str, list[str]],
) -> None:
    url, seen = echo_server
    payloads = [b"1", b"22", b"333"]
    with experiment.Clients("t", experiment.fixed(url), payloads, 4, limit=60, core=None) as c:
        c.done.wait(30)
    ids = [a.request_id for a in c.answers]
    assert 60 <= c.answered == len(ids) < 64
    assert sorted(ids) == sorted(seen)
    assert len(set(ids)) == len(ids)
    rows = experiment.answered_rows(c.answers)
    assert len(rows) == sum(a.rows for a in c.answers)
    assert {a.rows for a in c.answers} == set(experiment.BODY_ROWS)


def _echo_upstream() -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: _echo(c), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


def _through(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"ping")
        return conn.recv(1024)


def test_tcp_switch_relays_refuses_while_down_and_resets_open_connections() -> None:
    upstream, port = _echo_upstream()
    switch = experiment.TcpSwitch(("127.0.0.1", port))
    switch.up()
    try:
        assert _through(switch.port) == b"ping"
        held = socket.create_connection(("127.0.0.1", switch.port), timeout=5)
        held.sendall(b"x")
        assert held.recv(16) == b"x"
        switch.down()
        with pytest.raises(ConnectionRefusedError):
            _through(switch.port)
        with pytest.raises(ConnectionResetError):
            held.recv(16)
        held.close()
        switch.up()
        assert _through(switch.port) == b"ping"
    finally:
        switch.down()
        upstream.close()


def test_quick_run_changes_only_known_knobs_and_writes_a_temporary_file() -> None:
    assert replace(experiment.Config(), **experiment.QUICK)
    cfg, args = options.parse_args(
        ["--quick", "--only", "statistics"],
        "",
        experiment.Config(),
        experiment.QUICK,
        experiment.RESULTS,
        experiment.PARTS,
    )
    assert cfg.parts == ("statistics",)
    assert cfg.report_rows == experiment.QUICK["report_rows"]
    assert args.output.name == "modelyard-experiment-quick.json"
