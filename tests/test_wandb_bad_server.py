"""A W&B server that answers badly (HTTP 500 to everything, a TCP connection accepted and then
silence, GET answered but POST hung): the job's W&B run goes offline within seconds, says so in
one line, and the run's end does not wait on the server either. The servers are threads of this
test; the run is started and finished by the job's own logger (conf/logger/wandb.yaml through
reslab.loggers) in a fresh process, whose phases are timed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_wandb import FAKE_KEY, history, no_login_env

from conftest import REPO, cli_env

pytestmark = pytest.mark.slow  # `pytest -m slow` runs it (CI does)

# A limit, not a speed target: the wait before offline is promised to be under 10 s.
LIMIT_S = 20

# Builds the job's loggers from the composed default config, as a job does, and times them.
JOB_LOGGERS = f"""
import json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(levelname)s %(message)s")
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from reslab.loggers import build_loggers, close_loggers

with initialize_config_dir(config_dir="{REPO / "conf"}", version_base="1.3"):
    cfg = compose(config_name="train", overrides=["paths.output_dir=" + sys.argv[1]])
loggers = build_loggers(cfg, Path(sys.argv[1]), instantiate)
(wandb_logger,) = [lg for lg in loggers if type(lg).__name__ == "WandbJobLogger"]
began = time.monotonic()
wandb_logger.log_metrics({{"train/loss": 0.5}}, step=3)
started = time.monotonic()
closed = close_loggers([wandb_logger], "completed")
finished = time.monotonic() - started
times = {{"start_s": started - began, "finish_s": finished, "closed": closed, "at": time.time()}}
print("TIMES " + json.dumps(times), flush=True)
"""


def _answer_500(handler: BaseHTTPRequestHandler) -> None:
    body = b'{"errors": ["internal server error"]}'
    handler.send_response(500)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _answer_ok(handler: BaseHTTPRequestHandler) -> None:
    body = b"ok"
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _http_server(on_get, on_post) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            on_get(self)

        def do_POST(self):  # noqa: N802
            on_post(self)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


@pytest.fixture(params=["http_500", "silent_after_accept", "post_hangs"])
def bad_server(request):
    stop = threading.Event()

    def hang(handler: BaseHTTPRequestHandler) -> None:
        stop.wait()

    if request.param == "silent_after_accept":
        listener = socket.create_server(("127.0.0.1", 0))
        accepted: list[socket.socket] = []

        def accept() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])  # held open, never read, never answered
                except (TimeoutError, OSError):
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield request.param, f"http://127.0.0.1:{listener.getsockname()[1]}"
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()
        return
    on_get, on_post = {"http_500": (_answer_500, _answer_500), "post_hangs": (_answer_ok, hang)}[request.param]
    server = _http_server(on_get, on_post)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield request.param, f"http://127.0.0.1:{server.server_address[1]}"
    stop.set()
    server.shutdown()
    server.server_close()


def test_a_badly_answering_server_costs_seconds_and_the_run_is_kept_offline(bad_server, tmp_path):
    kind, url = bad_server
    env = cli_env(**{**no_login_env(tmp_path / "home"), "WANDB_BASE_URL": url, "WANDB_API_KEY": FAKE_KEY})
    job_dir = tmp_path / "job"
    script = tmp_path / "job_loggers.py"
    script.write_text(JOB_LOGGERS)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(job_dir)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = proc.communicate(timeout=240)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    ended = time.time()
    assert proc.returncode == 0, output[-4000:]
    (times_line,) = [line for line in output.splitlines() if line.startswith("TIMES ")]
    times = json.loads(times_line.removeprefix("TIMES "))
    assert times["start_s"] < LIMIT_S, f"{kind}: {times['start_s']:.1f} s before the run started\n{output[-3000:]}"
    assert times["finish_s"] < LIMIT_S, f"{kind}: {times['finish_s']:.1f} s to finish the run"
    assert times["closed"]["wandb"]["mode"] == "offline"
    # Nor does the process's exit (wandb's teardown).
    assert ended - times["at"] < LIMIT_S, f"{kind}: {ended - times['at']:.1f} s from the run's end to the exit"
    offline_lines = [line for line in output.splitlines() if "is offline" in line]
    assert len(offline_lines) == 1 and url in offline_lines[0] and "wandb sync" in offline_lines[0], output[-3000:]
    # What was logged is in the offline run.
    run_dir = job_dir / "wandb" / next(p.name for p in (job_dir / "wandb").glob("offline-run-*"))
    assert history(run_dir, "train/loss") == [(3, 0.5)]
