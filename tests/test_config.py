"""Config validation: precise messages, exit 2, nothing processed."""

from __future__ import annotations


import pytest

from helpers import make_image
from smolvlm_watch import config as configmod

MINIMAL = """
model: {path: ./models/tiny}
tasks:
  ask: {prompt: "How many people are in this image?"}
watches:
  - path: ./inbox
    recursive: true
    tasks: [caption, tags, ocr]
    outputs: [json, txt]
state: {db: ./state/journal.sqlite}
"""


def test_minimal_contract_shape_resolves(write_config, run_cli, tmp_path):
    cfg = write_config(MINIMAL)
    (tmp_path / "models" / "tiny").mkdir(parents=True)  # config check refuses a model.path that is not there
    code, out, err = run_cli("config", "check", cfg)
    assert code == 0, err
    assert f"path: {tmp_path / 'inbox'}" in out
    config = configmod.load(cfg)
    assert config.model.path == tmp_path / "models" / "tiny"
    assert config.watches[0].tasks == ("caption", "tags", "ocr")
    assert config.watches[0].outputs == ("json", "txt")
    assert config.state.db == tmp_path / "state" / "journal.sqlite"
    assert config.tasks["ask"].prompt == "How many people are in this image?"


def test_a_config_with_only_a_folder_works(write_config, tmp_path):
    config = configmod.load(write_config("watches: [./photos]\n"))
    assert config.watches[0].path == tmp_path / "photos"
    assert config.model.id == "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
    assert config.watches[0].tasks == ("caption", "tags")


@pytest.mark.parametrize("text, message", [
    ("watches:\n  - path: ./in\n  - path: ./in2\n    tasks: [capton]\n",
     "watches[1].tasks[0]: unknown task 'capton' (known: ask, caption, ocr, tags)"),
    ("watches:\n  - path: ./in\n    outputs: [json, yaml]\n",
     "watches[0].outputs[1]: unknown output 'yaml' (known: json, txt, xmp)"),
    ("model: {dtype: float8}\n", "model.dtype: 'float8' is not allowed (allowed: auto, float32, float16, bfloat16)"),
    ("model: {device: tpu}\n", "model.device: 'tpu' is not allowed (allowed: auto, cpu, cuda, mps)"),
    ("model: {quantize: int4}\n", "model.quantize: 'int4' is not allowed (allowed: auto, none, int8)"),
    ("model: {quantize: int8, dtype: bfloat16}\n",
     "model.quantize: int8 quantizes float32 weights; set model.dtype: auto or float32 (not bfloat16)"),
    ("model: {quantize: int8, device: cuda}\n", "model.quantize: int8 runs on the CPU only (torch's dynamic "
     "quantization has no cuda kernels); on a GPU use model.quantize: none"),
    ("model: {pth: ./x}\n", "model.pth: unknown key (known: id, path, revision"),
    ("tasks:\n  caption: {max_new_tokens: -3}\n", "tasks.caption.max_new_tokens: -3 is too small (minimum 1)"),
    ("tasks:\n  caption: {max_new_tokens: many}\n", "tasks.caption.max_new_tokens: expected an integer, got 'many'"),
    ("watches:\n  - recursive: true\n", "watches[0].path: missing: every watch needs the folder it watches"),
    ("watches: ./in\n", "watches: expected a list of watches, got './in'"),
    ("tasks: 3\n", "tasks: expected a mapping, got 3"),  # was a TypeError out of the parser
    ("watches:\n  - path: ./in\n    policy: clobber\n",
     "watches[0].policy: 'clobber' is not allowed (allowed: merge, skip, overwrite)"),
    ("colour: blue\n", "colour: unknown key (known: model, tasks, watches"),
    ("runtime: {compile: yes please}\n", "runtime.compile: expected true or false, got 'yes please'"),
    ("runtime: {prepare_ahead: sometimes}\n", "runtime.prepare_ahead: expected auto, true or false, got 'sometimes'"),
    ("model: [1, 2\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping, got list"),
    ("tasks:\n  nope: {prompt: hi}\n", "tasks.nope: unknown task 'nope'"),
    ("plugins: [no_such_module_xyz]\n", "plugin 'no_such_module_xyz' failed to import"),
])
def test_bad_config_gives_precise_message_and_exit_2(write_config, run_cli, tmp_path, text, message):
    cfg = write_config(text)
    code, out, err = run_cli("config", "check", cfg)
    assert code == 2
    assert message in err
    assert str(cfg) in err or "plugin" in message


def test_bad_config_processes_nothing(write_config, run_cli, tmp_path, tiny_model):
    make_image(tmp_path / "inbox" / "a.png")
    cfg = write_config(f"model: {{path: {tiny_model}}}\nwatches:\n  - path: ./inbox\n    tasks: [capton]\n")
    code, out, err = run_cli("process", tmp_path / "inbox", "-c", cfg, "--json")
    assert code == 2
    assert "watches[0].tasks[0]: unknown task 'capton'" in err
    assert out == ""
    assert not (tmp_path / "inbox" / "a.png.smolvlm.json").exists()


def test_unknown_task_on_command_line(run_cli, tmp_path, tiny_model):
    code, _, err = run_cli("process", tmp_path, "--model", tiny_model, "--task", "nope")
    assert code == 2 and "unknown task 'nope'" in err


def test_missing_config_file(run_cli, tmp_path):
    code, _, err = run_cli("config", "check", tmp_path / "absent.yaml")
    assert code == 2 and "cannot read the file" in err and "absent.yaml" in err


def test_watch_task_overrides_and_most_specific_watch(write_config, tmp_path):
    config = configmod.load(write_config("""
tasks:
  ask: {prompt: "global?"}
watches:
  - path: ./lib
  - path: ./lib/scans
    tasks:
      - ocr
      - ask: {prompt: "Is this an invoice?", max_new_tokens: 5}
"""))
    watch = config.watch_for(tmp_path / "lib" / "scans" / "x.png")
    assert watch.path == tmp_path / "lib" / "scans"
    assert config.task_config("ask", watch).prompt == "Is this an invoice?"
    assert config.task_config("ask", config.watches[0]).prompt == "global?"
    assert config.watch_for(tmp_path / "elsewhere.png") is None


def test_config_check_prints_resolved_defaults(write_config, run_cli):
    code, out, _ = run_cli("config", "check", write_config("watches: [./in]\n"))
    assert code == 0
    assert "settle_seconds: 2.0" in out and "policy: merge" in out


def test_example_config_is_valid(run_cli):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "config.example.yaml"
    code, out, err = run_cli("config", "check", example)
    assert code == 0, err


def test_the_service_config_writes_nothing_beside_itself(tmp_path, monkeypatch):
    """systemd/config.yaml is what README installs to /etc, which the unit sees read-only: every
    path absolute, the journal in the unit's $STATE_DIRECTORY (issue 17)."""
    from pathlib import Path

    from smolvlm_watch import config as configmod

    service = Path(__file__).resolve().parents[1] / "systemd" / "config.yaml"
    etc = tmp_path / "etc" / "smolvlm-watch"
    etc.mkdir(parents=True)
    installed = etc / "config.yaml"
    installed.write_text(service.read_text())
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "var-lib"))
    config = configmod.load(installed)
    assert config.state.db == tmp_path / "var-lib" / "journal.sqlite"
    assert [str(w.path) for w in config.watches] == ["/srv/photos", "/srv/scans/inbox"]
    assert config.outputs.mode == 0o664 and config.logging.format == "json"
    assert not [line for line in service.read_text().splitlines() if "./" in line.split("#")[0]]
    for w in config.watches:
        assert etc not in w.path.parents and (w.output.output_dir is None or w.output.output_dir.is_absolute())


def test_one_folder_watched_twice_or_a_file_as_a_watch_is_refused_with_the_key_and_fix(tmp_path, write_config,
                                                                                        run_cli):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "photo.jpg").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "inbox")
    cfg = write_config(f"watches:\n  - ./inbox\n  - {tmp_path / 'inbox'}/\n  - ./link\n  - ./photo.jpg\n"
                       "  - ./inbox/sub\n  - ./not-mounted-yet\n")
    code, _, err = run_cli("config", "check", cfg)
    assert code == 2
    assert (f"watches[1].path: {tmp_path / 'inbox'} is already watches[0]: one folder gets one watch; put both "
            "watches' tasks in one, or split the folder with include/exclude into subfolders") in err
    assert "watches[2].path:" in err and "is already watches[0]" in err  # a symlink to it is the same folder
    assert (f"watches[3].path: {tmp_path / 'photo.jpg'} is a file, not a folder: a watch takes a folder "
            "(its parent, with include: [\"photo.jpg\"], watches just this file)") in err
    assert "watches[4]" not in err and "watches[5]" not in err  # nested, and not there yet: fine


def test_run_without_watches_refuses_to_start(tmp_path, write_config, run_cli, tiny_model):
    code, _, err = run_cli("run", "-c", write_config(f"model: {{path: {tiny_model}}}\n"))
    assert code == 2
    assert "watches: none configured: the daemon would watch nothing (add a watches: entry;" in err


def test_config_check_reports_every_problem_in_one_pass_and_flags_missing_folders(write_config, run_cli, tmp_path,
                                                                                  tiny_model):
    """Issue 27, 7: an unknown output name was reported only after the other errors were fixed;
    `config check` passed a missing model.path folder and a missing watch folder."""
    cfg = write_config("model: {path: ./model, threads: zero}\n"
                       "watches: [{path: ./inbox, tasks: [caption, captoin], outputs: [json, jsno]}]\n")
    code, _, err = run_cli("config", "check", cfg)
    assert code == 2
    assert "model.threads:" in err  # the parse's own problem ...
    assert "watches[0].tasks[1]: unknown task 'captoin'" in err  # ... and the names, in the same pass
    assert "watches[0].outputs[1]: unknown output 'jsno'" in err

    cfg = write_config("model: {path: ./model}\nwatches: [{path: ./nas}]\n")
    code, _, err = run_cli("config", "check", cfg)
    assert code == 2 and f"model.path: {tmp_path / 'model'} is not a folder" in err
    cfg = write_config(f"model: {{path: {tiny_model}}}\nwatches: [{{path: ./nas}}]\n")
    code, out, _ = run_cli("config", "check", cfg)
    assert code == 0 and (f"# warning: watches[0].path: {tmp_path / 'nas'} does not exist now (a share not mounted "
                          "yet?); the daemon starts and shows this watch unavailable") in out
