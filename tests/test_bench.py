"""The throughput benchmark runs (quick mode, tiny model) and prints its contract keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smolvlm_watch.runtime import TransformersModel, placement
from zygote import script_run

BENCH = Path(__file__).resolve().parents[1] / "bench" / "throughput.py"
KEYS = {"preset", "device", "tasks", "images", "images_per_s", "reference_images_per_s", "ratio", "vision_passes",
        "peak_rss_mb", "peak_gpu_mb", "roofline_fraction"}


def test_bench_quick_prints_json_lines():
    row, = _quick("throughput.py")
    assert KEYS <= set(row)
    assert row["preset"] == "tiny" and row["tasks"] == ["caption", "tags", "ocr"] and row["images"] == 2
    # The reference loop encodes each image once per task; smolvlm-watch once per image.
    assert row["reference_vision_passes"] == 6 and row["vision_passes"] == 2
    # ... and prefills the prompt up to each question once per image, not once per question.
    assert 0 < row["prefill_tokens"] < 0.6 * row["reference_prefill_tokens"]
    assert row["images_per_s"] > 0 and row["reference_images_per_s"] > 0
    assert {"latency_s", "inference_s", "latency_overhead_s"} <= set(row)


def _quick(name: str, *args: str) -> list[dict]:
    """A bench's --quick run (a child of the warmed interpreter: tests/zygote.py): its JSON lines."""
    proc = script_run(BENCH.with_name(name), ["--quick", *args], BENCH.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_decode_bench_quick_prints_one_line_per_case(tmp_path):
    rows = _quick("decode.py", "--dir", str(tmp_path))
    assert [r["case"] for r in rows] == ["camera_jpeg", "dng_preview", "heic", "heic_10bit"]
    for row in rows:
        assert row["seconds"] > 0 and row["baseline_seconds"] > 0 and row["ratio"] > 0
        assert row["spread"][0] <= row["seconds"] <= row["spread"][1]


def test_search_bench_quick_prints_size_latency_and_recording_cost():
    size, queries, recording = _quick("search.py")
    assert size["files"] == 2000 and size["passages"] > 2000 and size["index_mb"] > 0
    assert set(queries["queries"]) == {"word", "phrase", "substring", "cyrillic"}
    for q in queries["queries"].values():
        assert q["hits"] > 0 and 0 < q["p50_ms"] <= q["p95_ms"] <= q["max_ms"]
    assert recording["recording_ratio"] > 0 and len(recording["jobs_per_s_with_index"]) == 3


def test_remote_bench_quick_prints_both_clients_and_their_ratios(tmp_path):
    rows = _quick("remote.py", "--dir", str(tmp_path))
    assert [r["photos"] for r in rows] == ["camera", "photo"]
    for row in rows:
        assert row["before"]["bytes_per_photo"] > row["now"]["bytes_per_photo"] > 0
        assert row["ratio_bytes"] > 1 and row["ratio_cpu"] > 0 and row["now"]["photos_per_s"][0] > 0


@pytest.mark.long  # two torch.compile passes of the vision tower: ~2 minutes of CPU; .ci/run runs it in test-long
def test_engines_bench_quick_prints_every_engine_with_its_ratios_and_parts(tmp_path):
    rows = _quick("engines.py")
    photos = [r for r in rows if r["kind"] == "photo"]
    assert [(r["engine"], r["settings"]) for r in photos] == [
        ("reference loop (transformers docs), float32", "13 tiles"),
        ("torch, today's precision", "task defaults"), ("torch + int8 linear layers", "task defaults"),
        ("torch, today's precision", "13 tiles"), ("torch + int8 linear layers", "13 tiles")]
    today = placement(TransformersModel(device="cpu")).dtype  # bf16 where this CPU has it natively
    assert [r["dtype"] for r in photos[1:]] == [today, "float32"] * 2
    for r in photos[1:]:
        assert r["images_per_s"] > 0 and r["ratio_reference"] > 0 and r["peak_rss_mb"] > 0
    assert photos[1]["ratio_today"] == photos[3]["ratio_today"] == 1.0
    assert photos[1]["vision_passes"] == 2 and photos[3]["vision_passes"] == 1  # one tile and 13 tiles: two images
    parts = {r["engine"]: r for r in rows if r["kind"] == "parts"}
    assert set(parts) == {"torch, today's precision", "torch + int8 linear layers"}
    assert parts["torch, today's precision"]["dtype"] == today
    assert all(p["decode_step_ms"][0] > 0 and p["vision_tile_by_tile_s"][0] > 0 for p in parts.values())
    assert all(p["vision_compiled_tile_by_tile_s"][0] > 0 and p["vision_compiled_first_call_s"] > 0
               for p in parts.values())
    if today == "float32":  # compiled, the same features within float32 rounding
        assert parts["torch, today's precision"]["vision_compiled_max_abs_drift"] < 1e-3
    assert all(len(p["vision_one_tile_ops_ms"]) == 5 for p in parts.values())
    assert "quantized::linear_dynamic" in parts["torch + int8 linear layers"]["vision_one_tile_ops_ms"]


def test_the_gate_bench_prints_its_ratio_on_a_mixed_library_and_caps_the_isa():
    """Issue 29, 4-5: `--quick --mix 0.2` on the tiny model: 10 photos, 2 with text; always runs
    OCR's own vision pass on all 10, text-seen on the 2 the gate lets through."""
    [row] = _quick("throughput.py", "--mix", "0.2", "--isa", "avx2")
    assert (row["images"], row["with_text"], row["mix"]) == (10, 2, 0.2)
    assert row["always_vision_passes"] == 20 and row["text_seen_vision_passes"] == 12
    assert row["mix_ratio"] > 0 and row["always_seconds_per_photo"] > 0 and row["text_seen_seconds_per_photo"] > 0
    assert row["isa"] == "avx2" and row["isa_capped"] == "avx2"


def test_the_scale_bench_prints_its_contract_keys():
    """Issue 28, 4: `bench/scale.py --quick` (2,000 files, a 300-file burst)."""
    [row] = _quick("scale.py")
    assert row["files"] == 2000 and row["burst_files"] == 300
    for key in ("ready_s", "rescan_full_cpu_s", "live_latency_during_rescan_s", "burst_rate_ratio", "status_s",
                "search_p95_ms", "search_rare_p95_ms", "panel_s", "rss_mb_before_model", "journal_mb",
                "rescan_cpu_per_interval"):
        assert row[key] > 0, key
    assert 0 <= row["rescan_cpu_s"] < row["rescan_full_cpu_s"]  # unchanged folders from memory
    assert row["live_latency_during_rescan_s"] < 5


@pytest.mark.long  # two `process` runs in fresh interpreters; .ci/run runs it in test-long
def test_the_memory_bench_compares_the_default_with_a_variant_in_one_run():
    """Issue 27, 4: `bench/memory.py --quick` runs the household mix at the defaults and at
    another variant (here the old CPU batch of 4) and prints each one's peaks and times."""
    *_, report = _quick("memory.py", "--variants", "auto,batch4")
    assert report["preset"] == "tiny" and set(report["variants"]) == {"auto", "batch4"}
    for row in report["variants"].values():
        assert row["done_files"] == [4] and row["failed_files"] == 0
        assert 0 < row["peak_mb"][0] < 2048 and row["within_2gb"] is True and row["seconds"][0] > 0
