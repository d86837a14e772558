"""systemd: unit files, sd_notify against a real socket, JSON logs, doctor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import daemon_config, journal_states, make_image, spawn, wait_for, write_trap_plugin

UNITS = Path(__file__).resolve().parents[1] / "systemd"
EXPOSURE_THRESHOLD = 20  # README promises exposure 2.0 or lower ("OK"); measured 0.4 SAFE


def _installed_unit(tmp_path: Path, name: str, as_name: str) -> Path:
    """The unit with ExecStart pointing at this environment's smolvlm-watch (verify needs it to exist)."""
    exe = Path(sys.executable).with_name("smolvlm-watch")
    text = (UNITS / name).read_text().replace("/usr/local/bin/smolvlm-watch", str(exe))
    out = tmp_path / as_name
    out.write_text(text)
    return out


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs Debian's systemd package)")
    return tool


@pytest.mark.parametrize("name, as_name", [("smolvlm-watch.service", "smolvlm-watch.service"),
                                           ("smolvlm-watch@.service", "smolvlm-watch@photos.service")])
@pytest.mark.parametrize("drop_in", [None, "listen.conf", "network.conf"])
def test_units_pass_systemd_analyze_verify(tmp_path, name, as_name, drop_in):
    """Each unit alone and with each drop-in README installs (issue 27, 3)."""
    tool = _analyze()
    unit = _installed_unit(tmp_path, name, as_name)
    if drop_in:
        folder = tmp_path / f"{as_name}.d"
        folder.mkdir()
        shutil.copy(UNITS / drop_in, folder / drop_in)
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_listen_drop_in_opens_loopback_only_and_the_unit_waits_for_no_network():
    listen = (UNITS / "listen.conf").read_text()
    for line in ("PrivateNetwork=no", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "IPAddressDeny=any",
                 "IPAddressAllow=localhost"):
        assert f"\n{line}\n" in listen, line
    unit = (UNITS / "smolvlm-watch.service").read_text()
    assert "network-online.target" not in unit.split("[Service]")[0].replace("systemd/network.conf adds the "
                                                                              "network target too", "")
    assert "Wants=network-online.target" in (UNITS / "network.conf").read_text()


def _group(tool: str, name: str, seen: set[str]) -> set[str]:
    """The system calls a SystemCallFilter group (or one call) stands for, nested groups expanded."""
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run([tool, "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            calls |= _group(tool, item, seen)
    return calls


def test_the_units_syscall_filter_allows_every_call_a_sidecar_replacement_makes(tmp_path):
    """Issue 27, 2: `~@privileged` took @chown with it, so atomic's fchown got EPERM and a
    replaced sidecar lost its group under the unit. The calls are traced (strace) while a
    Python process replaces a file keeping its group, and each must pass the unit's filter."""
    tool, strace = _analyze(), shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    allowed: set[str] = set()
    for line in (UNITS / "smolvlm-watch.service").read_text().splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            deny = value.startswith("~")
            calls = set().union(*(_group(tool, n, set()) for n in value.lstrip("~").split()))
            allowed = allowed - calls if deny else allowed | calls
    target = tmp_path / "photo.jpg.xmp"
    target.write_text("hers")
    trace = tmp_path / "trace"
    code = ("import pathlib; from smolvlm_watch.atomic import atomic_write; "
            f"atomic_write(pathlib.Path({str(target)!r}), b'ours')")
    subprocess.run([strace, "-f", "-qq", "-c", "-U", "name", "-o", str(trace), sys.executable, "-c", code],
                   check=True, capture_output=True)
    used = {line.split()[0] for line in trace.read_text().splitlines()[2:] if line.split() and line[0].isalpha()}
    used -= {"syscall", "total"}
    assert {"fchown", "fchmod", "fsync"} <= used, used  # the replacement's own calls were traced
    assert sorted(used - allowed) == []


def test_unit_security_exposure_within_readme_promise(tmp_path):
    tool = _analyze()
    unit = _installed_unit(tmp_path, "smolvlm-watch.service", "smolvlm-watch.service")
    proc = subprocess.run([tool, "security", "--offline=true", f"--threshold={EXPOSURE_THRESHOLD}", str(unit)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Overall exposure level for smolvlm-watch.service: 0." in proc.stdout
    readme = (UNITS.parent / "README.md").read_text()
    assert "exposure level 0.6 SAFE" in readme


def test_units_keep_the_required_settings():
    text = (UNITS / "smolvlm-watch.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "WatchdogSec=", "User=smolvlm\n", "Group=smolvlm\n", "StateDirectory=smolvlm-watch",
                 "CacheDirectory=smolvlm-watch", "ProtectSystem=strict", "PrivateDevices=yes",
                 "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service", "UMask=0002", "HF_HUB_OFFLINE=1"):
        assert line in text, line
    # DynamicUser= recycles UIDs on files that outlive the service; ProcSubset=pid hides
    # /proc/cpuinfo (bf16 detection: float32 instead, 2.3x slower) and /proc/sys (inotify limits)
    for line in ("\nDynamicUser=yes", "\nProcSubset=pid", "\nPrivateUsers=yes"):
        assert line not in text, line
    sysusers = (UNITS / "sysusers.d" / "smolvlm-watch.conf").read_text()
    assert "\nu smolvlm - " in sysusers
    assert "\nMemoryDenyWriteExecute" not in text and "MemoryDenyWriteExecute=yes: PyTorch" in text
    assert "smolvlm-watch run -c /etc/smolvlm-watch/%i.yaml" in (UNITS / "smolvlm-watch@.service").read_text()


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's, recording (time, message)."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.path = path
        self.messages: list[tuple[float, str]] = []

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def until(self, prefix: str, timeout: float) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, m in self.messages:
                if m.startswith(prefix):
                    return t
            self.pump(0.1)
        raise AssertionError(f"no {prefix!r} within {timeout}s; got {[m for _, m in self.messages]}")

    def count(self, message: str, since: float, until: float) -> int:
        return sum(1 for t, m in self.messages if m == message and since <= t <= until)

    def close(self):
        self.sock.close()


def test_sd_notify_ready_watchdog_stopping_and_wedged_worker(tmp_path, tiny_model):
    write_trap_plugin(tmp_path, "hangtask", "hang", "hang.png", "time.sleep(600)")
    cfg = daemon_config(tmp_path, tiny_model, tasks="[hang]", extra="plugins: [hangtask]\n")
    cfg.write_text(cfg.read_text().replace("max_attempts: 3}", "max_attempts: 3, item_timeout: 1}"))
    sock = NotifySocket(tmp_path / "notify.sock")
    env = {"NOTIFY_SOCKET": str(sock.path), "WATCHDOG_USEC": "1000000", "PYTHONPATH": str(tmp_path)}
    proc = spawn(cfg, env, fresh=True)
    try:
        ready = sock.until("READY=1", 60)
        names = [m for _, m in sock.messages]
        assert names.index("EXTEND_TIMEOUT_USEC=600000000") < names.index("READY=1")
        scanning = names.index("EXTEND_TIMEOUT_USEC=1800000000")  # the startup scan's own time: a big library's
        assert scanning < names.index("READY=1")
        assert names[scanning + 1] == f"STATUS=scanning {tmp_path / 'inbox'} for changes since the last run"
        from smolvlm_watch.journal import Journal

        j = Journal(tmp_path / "state" / "journal.sqlite")
        meta = json.loads(j.meta("daemon"))
        j.close()
        assert meta["watches"][0]["mode"] == "native" and meta["model_loaded"] is True  # armed before READY

        sock.pump(3.0)
        pings = sock.count("WATCHDOG=1", ready, ready + 3.0)
        assert 3 <= pings <= 8, pings  # every half of WATCHDOG_USEC (0.5 s), paced by the 0.2 s loop
        assert any(m.startswith("STATUS=queue 0") for _, m in sock.messages)

        make_image(tmp_path / "inbox" / "hang.png")
        sock.pump(3.0)  # settle 0.3 s + item_timeout 1 s: the worker is wedged from here on
        wedged = time.monotonic()
        sock.pump(2.0)
        assert sock.count("WATCHDOG=1", wedged, wedged + 2.0) == 0
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        sock.close()
    assert '"event": "job_over_time_limit"' in out


def test_logs_are_json_with_path_and_job_id_on_every_line_about_a_file(tmp_path, tiny_model):

    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]", outputs="[json, txt]")
    proc = spawn(cfg, {"NOTIFY_SOCKET": "@smolvlm-watch-test-nobody-listens"}, fresh=True)  # abstract address
    db = tmp_path / "state" / "journal.sqlite"
    broken = tmp_path / "inbox" / "broken.png"
    try:
        images = [make_image(tmp_path / "inbox" / f"j{i}.png", color=(i, 1, 1)) for i in range(3)]
        broken.write_bytes(b"nope")
        wait_for(lambda: all(journal_states(db).get(str(p)) == "done" for p in images)
                 and journal_states(db).get(str(broken)) == "failed", 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = [line for line in out.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is JSON, stdlib loggers' included
    about_files = [e for e in events if e["event"] in ("job_done", "job_failed")]
    assert len(about_files) == 4
    for e in about_files:
        assert e["path"].startswith(str(tmp_path / "inbox")) and isinstance(e["job_id"], int)
    failed = [e for e in about_files if e["event"] == "job_failed"]
    assert failed[0]["path"].endswith("broken.png") and "not a supported image" in failed[0]["error"]


def test_reloading_ready_on_sighup_and_stopping_on_sigterm(tmp_path, tiny_model):
    cfg = daemon_config(tmp_path, tiny_model)
    sock = NotifySocket(tmp_path / "n.sock")
    proc = spawn(cfg, {"NOTIFY_SOCKET": str(sock.path)}, fresh=True)
    try:
        first_ready = sock.until("READY=1", 60)
        proc.send_signal(signal.SIGHUP)
        reloading = sock.until("RELOADING=1", 20)
        sock.pump(2.0)
        assert [m for t, m in sock.messages if t >= reloading and m == "READY=1"], "no READY=1 after reload"
        assert first_ready < reloading
        proc.send_signal(signal.SIGTERM)
        sock.until("STOPPING=1", 20)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        sock.close()


def test_notify_is_a_no_op_without_systemd(monkeypatch):
    from smolvlm_watch.notify import notify, watchdog_interval

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None  # meant for another process
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 2.0


def test_doctor_good_and_broken(tmp_path, tiny_model, run_cli):
    cfg = daemon_config(tmp_path, tiny_model)
    code, out, _ = run_cli("doctor", "-c", cfg)
    assert code == 0, out
    assert f"ok    model {tiny_model} (local folder)" in out
    assert f"ok    output location {tmp_path / 'inbox'} is writable" in out
    assert "device cpu" in out and out.strip().endswith("all checks passed")
    import torch

    from smolvlm_watch.runtime import cpu_has_bf16

    why = ("this CPU has native bf16 (AVX512-BF16 or AMX)" if cpu_has_bf16() else
           "this CPU has no native bf16 (AVX512-BF16 or AMX), so int8 linear layers over float32 "
           "(model.quantize: auto)")
    from smolvlm_watch.doctor import OPENVINO_UNMEASURED, OPENVINO_VERDICT

    assert (f"ok    engine: transformers (torch {torch.__version__}) on cpu, "
            f"{'bfloat16' if cpu_has_bf16() else 'float32'}: no GPU is visible; {why}; OpenVINO is not used: "
            f"{OPENVINO_UNMEASURED if cpu_has_bf16() else OPENVINO_VERDICT} (README, Performance)\n") in out

    broken = tmp_path / "broken"
    (broken / "inbox").mkdir(parents=True)
    (broken / "ro").mkdir()
    bad = broken / "config.yaml"
    bad.write_text(f"model: {{path: {broken / 'no-model'}}}\nwatches:\n"
                   f"  - path: ./inbox\n    output_dir: /proc/smolvlm-nope\n")
    code, out, _ = run_cli("doctor", "-c", bad)
    assert code == 1
    assert f"FAIL  model folder {broken / 'no-model'} has no config.json — fix: point model.path" in out
    assert "FAIL  output location /proc/smolvlm-nope is not writable" in out
    assert "problem(s)" in out

    code, out, _ = run_cli("doctor", "-c", tmp_path / "missing.yaml")
    assert code == 1 and "FAIL  config:" in out


def test_doctor_says_which_engine_a_config_gets_and_why(tmp_path, run_cli, monkeypatch):
    from smolvlm_watch import runtime
    from smolvlm_watch.testing import InstantServer

    (tmp_path / "inbox").mkdir()
    cfg = tmp_path / "config.yaml"
    with InstantServer() as server:
        cfg.write_text(f'model: {{backend: openai, base_url: "{server.url}", name: m}}\nwatches: [{{path: ./inbox}}]\n')
        code, out, _ = run_cli("doctor", "-c", cfg)
    assert code == 0, out
    assert f"ok    engine: openai at {server.url} (model.backend: openai)" in out
    for cap, value in (("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2")):
        with monkeypatch.context() as m:  # torch told to stay below bf16 (bench/throughput.py --isa avx2)
            m.setenv(cap, value)
            assert runtime.cpu_has_bf16() is False
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    model = runtime.TransformersModel()
    assert runtime.placement(model) == runtime.Placement(
        "cpu", "bfloat16", "no GPU is visible; this CPU has native bf16 (AVX512-BF16 or AMX)")
    from smolvlm_watch import doctor
    from smolvlm_watch.config import Config

    bf16 = doctor.check_engine(Config(model=model)).what  # OpenVINO's bf16 case was never measured
    assert bf16.endswith(f"bfloat16: no GPU is visible; this CPU has native bf16 (AVX512-BF16 or AMX); "
                         f"OpenVINO is not used: {doctor.OPENVINO_UNMEASURED} (README, Performance)"), bf16
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)  # a NAS CPU: int8 unless told otherwise
    assert runtime.placement(model) == runtime.Placement(
        "cpu", "float32", "no GPU is visible; this CPU has no native bf16 (AVX512-BF16 or AMX), so int8 linear "
        "layers over float32 (model.quantize: auto)", "int8")
    assert runtime.placement(runtime.TransformersModel(dtype="float32")).quantize is None  # a dtype is a choice
    model = runtime.TransformersModel(quantize="none")
    assert runtime.placement(model).dtype == "float32"
    plain = doctor.check_engine(Config(model=model)).what
    assert plain.endswith(f"OpenVINO is not used: {doctor.OPENVINO_VERDICT} (README, Performance); "
                          f"model.quantize: int8 {doctor.INT8_VERDICT}"), plain
    assert runtime.placement(runtime.TransformersModel(dtype="bfloat16")) == runtime.Placement(
        "cpu", "bfloat16", "no GPU is visible; model.dtype says bfloat16")
    assert runtime.placement(runtime.TransformersModel(quantize="int8")) == runtime.Placement(
        "cpu", "float32", "no GPU is visible; model.quantize int8: int8 linear layers over float32", "int8")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert runtime.placement(runtime.TransformersModel(quantize="int8")) == runtime.Placement(
        "cuda", "bfloat16", "a CUDA device is visible; model.quantize int8 is ignored on a GPU (CPU kernels only); "
        "bfloat16 is its fastest precision")


def test_run_on_the_example_config_without_the_model_stops_with_the_clear_error(tmp_path):
    """What `make run` does on a machine with neither network nor a local copy of the model."""
    example = UNITS.parent / "config.example.yaml"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(example.read_text())
    (tmp_path / "inbox").mkdir()
    proc = subprocess.run([sys.executable, "-m", "smolvlm_watch.cli", "run", "-c", str(cfg)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1
    assert "error: cannot load model 'HuggingFaceTB/SmolVLM2-256M-Video-Instruct'" in proc.stderr
    assert "Fix: point model.path at a local folder" in proc.stderr


def test_doctor_fails_when_the_model_is_neither_cached_nor_reachable(tmp_path):
    """A machine without network (here: a hub endpoint nothing listens on) and without the model
    cached must not pass doctor: the first start would fail."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("watches: [{path: ./inbox}]\nstate: {db: ./state/journal.sqlite}\n")
    (tmp_path / "inbox").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "smolvlm_watch.cli", "doctor", "-c", str(cfg)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 1, proc.stdout
    line = next(x for x in proc.stdout.splitlines() if "HuggingFaceTB/SmolVLM2-256M-Video-Instruct" in x)
    assert line.startswith("FAIL  model HuggingFaceTB/SmolVLM2-256M-Video-Instruct is not in the local cache and "
                           "the hub cannot be reached (http://127.0.0.1:9: ConnectError)"), line
    assert "fix: download it once (`hf download HuggingFaceTB/SmolVLM2-256M-Video-Instruct`" in line
    assert "all checks passed" not in proc.stdout


def test_doctor_as_service_runs_in_the_units_sandbox_or_says_why_not(run_cli, tmp_path, monkeypatch):
    from smolvlm_watch import doctor

    text = (UNITS / "smolvlm-watch@.service").read_text() + (
        "\n# /etc/systemd/system/smolvlm-watch@photos.service.d/override.conf\n[Service]\n"
        "ReadWritePaths=/srv/photos\nSupplementaryGroups=family\n")
    command = doctor.as_service_command("smolvlm-watch@photos", text, ["/opt/bin/smolvlm-watch", "doctor"])
    assert command[:6] == ["systemd-run", "--wait", "--pipe", "--quiet", "--collect",
                           "--unit=smolvlm-watch-photos-doctor"]
    props = [command[i + 1] for i, part in enumerate(command) if part == "-p"]
    for prop in ("User=smolvlm", "ProtectSystem=strict", "StateDirectory=smolvlm-watch/photos",
                 "Environment=HF_HOME=/var/cache/smolvlm-watch/huggingface", "ReadWritePaths=/srv/photos",
                 "SupplementaryGroups=family", "UMask=0002"):
        assert prop in props, prop
    assert not [p for p in props if p.startswith(("ExecStart=", "Type=", "WatchdogSec=", "Restart="))]
    assert command[-3:] == ["--", "/opt/bin/smolvlm-watch", "doctor"]

    monkeypatch.setattr(doctor, "systemd_is_pid1", lambda: "PID 1 is 'bash', not systemd (a container or a chroot)")
    code, out, _ = run_cli("doctor", "--as-service", "-c", tmp_path / "config.yaml")
    assert code == 1
    assert out.startswith("FAIL  cannot run the checks as the service: PID 1 is 'bash', not systemd")


def test_process_with_json_logging_writes_only_json_to_stderr(tmp_path, tiny_model):
    """`process -v` with logging.format json: every stderr line a JSON object, the libraries' own
    log records and Python warnings included (a warning raised inside a task here)."""
    inbox = tmp_path / "inbox"
    for i in range(3):
        make_image(inbox / f"p{i}.png", color=(i * 70, 5, 5))
    (inbox / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    write_trap_plugin(tmp_path, "warner", "loud", "p0.png",
                      "import warnings; warnings.warn('a plugin warns', UserWarning)")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"model: {{path: {tiny_model}, threads: 1}}\nplugins: [warner]\n"
                   "tasks: {caption: {max_new_tokens: 2}, loud: {max_new_tokens: 2}}\n"
                   "watches: [{path: ./inbox, tasks: [caption, loud], outputs: [json]}]\nlogging: {format: json}\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "smolvlm_watch.cli", "process", str(inbox), "-c", str(cfg), "-v"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the broken file
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    names = [e["event"] for e in events]
    assert names.count("file_done") == 3 and names.count("file_failed") == 1, names
    warned = [e for e in events if "a plugin warns" in e["event"] or "a plugin warns" in str(e.get("message"))]
    assert warned and warned[0]["logger"] == "py.warnings"


def test_sysusers_creates_the_units_user_and_group(tmp_path):
    """What `systemd-sysusers` makes of the shipped file, in a scratch root (no PID-1 systemd needed)."""
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        pytest.skip("systemd-sysusers is not installed (.ci/run installs Debian's systemd package)")
    (tmp_path / "etc").mkdir()
    proc = subprocess.run([tool, f"--root={tmp_path}", str(UNITS / "sysusers.d" / "smolvlm-watch.conf")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    user = next(line for line in (tmp_path / "etc" / "passwd").read_text().splitlines() if line.startswith("smolvlm:"))
    name, _, uid, gid, _, home, shell = user.split(":")
    assert int(uid) < 1000 and home == "/var/lib/smolvlm-watch" and shell == "/usr/sbin/nologin"
    assert f"smolvlm:x:{gid}:" in (tmp_path / "etc" / "group").read_text()



def test_doctor_judges_memory_by_memavailable_against_the_measured_peak(tmp_path, monkeypatch):
    """Issue 27, 6: doctor read MemFree ("8.8 GiB available" when 20.6 GiB was) and compared it
    with 3x the weights. It reads MemAvailable now and compares the peak a run of this model at
    this precision reaches (measured, bench/memory.py's household mix on the 256M preset:
    float32 2,406 MB, int8 2,040 MB, bfloat16 2,016 MB)."""
    from smolvlm_watch import doctor
    from smolvlm_watch.config import Config
    from smolvlm_watch.runtime import TransformersModel

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         9227468 kB\nMemAvailable:   21600000 kB\n")
    assert doctor.mem_available(str(meminfo)) == 21600000 * 1024
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"torch_dtype": "bfloat16"}')
    weights_256m = 256_000_000 * 2  # as saved on the hub: bfloat16
    for quantize, dtype, low, high in (("none", "float32", 2.3, 2.9), ("int8", "auto", 1.9, 2.3),
                                        ("none", "bfloat16", 1.9, 2.3)):
        config = Config(model=TransformersModel(path=model, device="cpu", dtype=dtype, quantize=quantize))
        peak = doctor.expected_peak(config, weights_256m) / 2**30
        assert low < peak < high, (quantize, peak)
