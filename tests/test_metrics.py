"""metrics.listen: Prometheus text at /metrics and the watchdog's rule at /healthz, scraped from a
running daemon (issue 17)."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

import pytest

from helpers import daemon_config, journal_states, log_events, make_image, spawn, wait_for, write_trap_plugin


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _value(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == want:
            return float(value)
    return None


def test_a_running_daemon_is_scraped_and_reports_its_health(tmp_path, tiny_model):
    go = tmp_path / "go"  # the slow job runs until the test has seen /healthz say so
    write_trap_plugin(tmp_path, "slowpoke", "slow", "slow.png",
                      f"while not __import__('os').path.exists({str(go)!r}): time.sleep(0.05)")
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, slow]",
                        extra="metrics: {listen: '127.0.0.1:0'}\nplugins: [slowpoke]\n")
    cfg.write_text(cfg.read_text().replace("state: {", "state: {item_timeout: 2, "))
    proc = spawn(cfg, {"PYTHONPATH": str(tmp_path)})
    events = log_events(proc)
    db = tmp_path / "state" / "journal.sqlite"
    inbox = tmp_path / "inbox"
    try:
        wait_for(lambda: any(e["event"] == "http_listening" for e in events), 120, what="the listener")
        address = next(e["address"] for e in events if e["event"] == "http_listening")
        base = f"http://{address}"
        images = [make_image(inbox / f"m{i}.png", color=(i * 90, 9, 9)) for i in range(2)]
        (inbox / "broken.png").write_bytes(b"not a png")
        wait_for(lambda: [journal_states(db).get(str(p)) for p in images] == ["done", "done"]
                 and journal_states(db).get(str(inbox / "broken.png")) == "failed", 60, what="files finished")
        code, text = _get(base + "/metrics")
        assert code == 200
        watch = str(inbox)
        assert _value(text, "smolvlm_watch_files_total", watch=watch, outcome="done") == 2
        assert _value(text, "smolvlm_watch_files_total", watch=watch, outcome="failed") == 1
        assert _value(text, "smolvlm_watch_task_runs_total", watch=watch, task="caption") == 2
        assert _value(text, "smolvlm_watch_queue_files", state="done") == 2
        assert _value(text, "smolvlm_watch_queue_files", state="failed") == 1
        assert _value(text, "smolvlm_watch_model_loaded") == 1
        assert _value(text, "smolvlm_watch_watch_mode", watch=watch, mode="native") == 1
        assert _value(text, "smolvlm_watch_watch_mode", watch=watch, mode="polling") == 0
        assert _value(text, "smolvlm_watch_vision_passes_total") >= 2
        assert _value(text, "smolvlm_watch_inference_seconds_count") >= 1
        assert _value(text, "smolvlm_watch_batch_size_sum") >= 1
        assert _value(text, "smolvlm_watch_last_success_timestamp_seconds") > time.time() - 120
        assert _get(base + "/healthz") == (200, "ok\n")
        assert _get(base + "/nothing")[0] == 404

        make_image(inbox / "slow.png", color=(1, 200, 1))  # a job past state.item_timeout: unhealthy
        wait_for(lambda: _get(base + "/healthz")[0] == 503, 30, what="/healthz 503")
        assert _get(base + "/healthz")[1] == "unhealthy: a job has run longer than state.item_timeout (2 s)\n"
        go.touch()
        wait_for(lambda: journal_states(db).get(str(inbox / "slow.png")) == "done", 60, what="slow done")
        assert _get(base + "/healthz") == (200, "ok\n")  # healthy again once it finished
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0


@pytest.mark.parametrize("listen, extra, error", [
    ("0.0.0.0:9464", "", "metrics.listen: 0.0.0.0:9464 is not a loopback address: the metrics name every watched "
                         "folder; set metrics.allow_remote: true to serve them beyond this machine"),
    ("0.0.0.0:9464", ", allow_remote: true", None),
    ("true", "", None),
    ("'[::1]:9500'", "", None),
    ("'localhost:99999'", "", "metrics.listen: expected host:port such as 127.0.0.1:9464, got 'localhost:99999'"),
])
def test_metrics_listen_is_checked(write_config, run_cli, listen, extra, error):
    code, out, err = run_cli("config", "check", write_config(f"metrics: {{listen: {listen}{extra}}}\n"))
    if error:
        assert code == 2 and error in err
    else:
        assert code == 0, err
        resolved = out.split("metrics:", 1)[1]
        expected = {"true": "127.0.0.1:9464", "'[::1]:9500'": "'[::1]:9500'"}.get(listen, listen)
        assert f"listen: {expected}" in resolved
