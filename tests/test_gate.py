"""Issue 29: `tasks.NAME.when: text-seen`: a photo's OCR runs only where a yes/no question,
asked with caption and tags on the same tile, did not answer "no". The tiny model's answers are
random, so the gate's answer is set per photo where the mechanism is tested (its parsing is
tested on its own), and the greedy OCR text is compared with and without the gate."""

from __future__ import annotations

import json

import pytest

from helpers import InProcess, daemon_config, make_image, read_sidecar, text_pdf, wait_for
from smolvlm_watch import tasks as tasks_module
from smolvlm_watch.tasks import GATE_PROMPT, text_seen

ANSWERS = {"plain": "No.", "sign": "YES", "noise": "mumble mumble"}


@pytest.fixture
def gate_answers(monkeypatch):
    """The gate's answer for each photo by its name (what the model would have said)."""
    real = tasks_module.Task.parse

    def parse(self, answers, spec, media):
        if self.name.endswith(tasks_module.GATE_SUFFIX):
            return next(a for k, a in ANSWERS.items() if k in media.info.path)
        return real(self, answers, spec, media)

    monkeypatch.setattr(tasks_module.Task, "parse", parse)


def _config(write_config, tiny_model, folder, when="text-seen", extra=""):
    return write_config(
        f"model: {{path: {tiny_model}, threads: 1}}\n"
        "tasks: {caption: {max_new_tokens: 3}, tags: {max_new_tokens: 3},"
        f" ocr: {{max_new_tokens: 6, image_splitting: false, when: {when}{extra}}}}}\n"
        f"watches: [{{path: {folder}, tasks: [caption, tags, ocr], outputs: [json, txt]}}]\n")


@pytest.mark.parametrize("answer, runs", [("No.", False), ("no", False), ("NO!", False), (" No, none. ", False),
                                          ("Yes.", True), ("yes", True), ("Nope", True), ("", True),
                                          (None, True), ("the image shows", True)])
def test_only_a_clear_no_keeps_the_task_from_running(answer, runs):
    assert text_seen(answer, None) is runs


def test_text_seen_runs_ocr_only_where_the_gate_did_not_say_no(tmp_path, tiny_model, write_config, run_cli,
                                                                gate_answers):
    folder = tmp_path / "photos"
    photos = {k: make_image(folder / f"{k}.png", color=(i * 70, 20, 20)) for i, k in enumerate(ANSWERS)}
    cfg = _config(write_config, tiny_model, folder)
    code, out, err = run_cli("process", folder, "-c", cfg, "--json")
    assert code == 0 and sorted(json.loads(out)["done"]) == sorted(map(str, photos.values())), out + err

    plain = read_sidecar(photos["plain"])["tasks"]
    assert plain["ocr"] == {"skipped": "no text seen", "gate": {"prompt": GATE_PROMPT, "answer": "No."},
                            "plugin": "smolvlm_watch_plugins.ocr", "plugin_version": plain["ocr"]["plugin_version"],
                            "fingerprint": plain["ocr"]["fingerprint"]}
    assert "result" in plain["caption"] and "result" in plain["tags"]
    assert not (folder / "plain.png.txt").exists()  # no text, no .txt
    for name in ("sign", "noise"):  # a yes, and an answer that is neither: OCR runs
        ocr = read_sidecar(photos[name])["tasks"]["ocr"]
        assert "result" in ocr and ocr["gate"] == {"prompt": GATE_PROMPT, "answer": ANSWERS[name]}
        assert (folder / f"{name}.png.txt").read_text(encoding="utf-8") == ocr["result"]
    code, out, _ = run_cli("explain", photos["plain"], "-c", cfg)
    assert "ocr: skipped — no text seen (gate answered 'No.')" in out.splitlines(), out


def test_the_gate_shares_the_tile_caption_and_tags_look_at(tmp_path, tiny_model, write_config, gate_answers):
    """One vision pass for caption, tags and the gate question; none more for a photo the gate
    keeps OCR from."""
    from smolvlm_watch.cli import load_checked
    from smolvlm_watch.pipeline import FileJob, Pipeline

    folder = tmp_path / "photos"
    plain = make_image(folder / "plain.png")
    config, registry = load_checked(_config(write_config, tiny_model, folder))
    pipeline = Pipeline(config, registry, registry.engine(config))
    [(_, result)] = list(pipeline.process_many([FileJob(plain, config.watches[0])]))
    assert result.status == "done" and pipeline.engine.vision_passes == 1


def test_ocr_text_is_the_same_with_and_without_the_gate(tmp_path, tiny_model, write_config, run_cli, gate_answers):
    folder = tmp_path / "photos"
    sign = make_image(folder / "sign.png", color=(30, 200, 30))
    results = []
    for when in ("always", "text-seen"):
        code, out, _ = run_cli("process", sign, "-c", _config(write_config, tiny_model, folder, when), "--force",
                               "--json")
        assert code == 0, out
        results.append(read_sidecar(sign)["tasks"]["ocr"])
    assert results[0]["result"] == results[1]["result"] and results[0]["raw"] == results[1]["raw"]
    assert "gate" not in results[0] and results[1]["gate"]["answer"] == "YES"
    assert results[0]["fingerprint"] != results[1]["fingerprint"]  # the gate is part of what shaped it


def test_a_document_is_always_read_in_full(tmp_path, tiny_model, write_config, run_cli, gate_answers):
    folder = tmp_path / "scans"
    pdf = text_pdf(folder / "plain-scan.pdf", ["Invoice 2026 for ACME", "Page two"])  # "plain": the gate would say no
    results = []
    for when in ("always", "text-seen"):
        code, out, _ = run_cli("process", pdf, "-c", _config(write_config, tiny_model, folder, when), "--force",
                               "--json")
        assert code == 0, out
        results.append(read_sidecar(pdf))
    assert results[0]["tasks"]["ocr"]["result"] == results[1]["tasks"]["ocr"]["result"]
    assert "gate" not in results[1]["tasks"]["ocr"] and len(results[1]["pages"]) == 2


def test_a_gate_prompt_change_and_backfill_stale_ask_again(tmp_path, tiny_model, run_cli, gate_answers):
    cfg = daemon_config(tmp_path, tiny_model, tasks="[caption, ocr]")
    cfg.write_text(cfg.read_text().replace("ocr: {max_new_tokens: 2, image_splitting: false}",
                                           "ocr: {max_new_tokens: 2, image_splitting: false, when: text-seen}"))
    plain = make_image(tmp_path / "inbox" / "plain.png")
    d = InProcess(cfg)
    try:
        d.wait_done([plain])
        assert read_sidecar(plain)["tasks"]["ocr"]["gate"]["prompt"] == GATE_PROMPT
        cfg.write_text(cfg.read_text().replace("when: text-seen", "when: text-seen, gate_prompt: 'Any words? yes/no'"))
        d.daemon.reload_requested.set()
        wait_for(lambda: d.daemon.config.tasks["ocr"].gate_prompt is not None, 10, what="the reload")
        code, out, _ = run_cli("backfill", "-c", cfg, "--stale")
        assert code == 0, out
        wait_for(lambda: read_sidecar(plain)["tasks"]["ocr"]["gate"]["prompt"] == "Any words? yes/no", 30,
                 what="asked again with the new gate")
        assert read_sidecar(plain)["tasks"]["ocr"]["skipped"] == "no text seen"
    finally:
        d.stop()


def test_the_bench_hook_is_out_of_a_users_reach(write_config, run_cli):
    """GATE_ORACLE is for bench/throughput.py only: no config key reaches it."""
    for key in ("gate_oracle: true", "options: {gate_oracle: true}", "when: oracle"):
        cfg = write_config(f"tasks: {{ocr: {{{key}}}}}\nwatches: [./in]\n")
        code, _, err = run_cli("config", "check", cfg)
        assert code == 2 and "tasks.ocr" in err, (key, err)
    assert tasks_module.GATE_ORACLE is None
