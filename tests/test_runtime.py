"""The runtime against transformers' own reference usage, and its batching and loop guard."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from helpers import make_image
from smolvlm_watch.config import ImageSettings, RuntimeConfig
from smolvlm_watch.media import load
from smolvlm_watch.engine import GenerationSettings, ModelLoadError, Request, question
from smolvlm_watch.batching import LoopGuard, plan
from smolvlm_watch.runtime import Runtime, TransformersModel


@pytest.fixture(scope="module")
def runtime(tiny_model):
    rt = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"))  # the reference runs in float32
    rt.load()
    return rt


def test_parity_with_reference_usage(tmp_path, tiny_model, runtime):
    """Same input_ids, pixel_values and greedy tokens as the transformers SmolVLM doc's loop."""
    path = make_image(tmp_path / "photo.png", (300, 200), (30, 120, 220))
    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model).eval()
    conversation = [{"role": "user", "content": [{"type": "image", "path": str(path)},
                                                 {"type": "text", "text": "Describe this image."}]}]
    ref = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt")
    ref_out = model.generate(**ref, max_new_tokens=24, do_sample=False)
    ref_tokens = ref_out[0, ref["input_ids"].shape[1]:].tolist()

    media = load(path)
    request = Request(images=media.images, messages=question("Describe this image."),
                      generation=GenerationSettings(max_new_tokens=24, loop_guard=False))
    ours = runtime.encode([request])
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["pixels"][0].pixel_values, ref["pixel_values"][0])
    assert torch.equal(ours["pixels"][0].pixel_attention_mask, ref["pixel_attention_mask"][0])
    answer, = runtime.generate([request])
    assert len(ref_tokens) == 24  # random weights never emit the end token
    assert list(answer.token_ids) == ref_tokens


def test_batched_equals_unbatched(runtime):
    images = [Image.new("RGB", size, color) for size, color in
              [((300, 200), (200, 10, 10)), ((64, 64), (10, 200, 10)), ((90, 300), (10, 10, 200))]]
    prompts = ["Describe this image.", "What is it?", "List keywords for this image, comma separated."]
    requests = [Request(images=(img,), messages=question(p),
                        generation=GenerationSettings(max_new_tokens=16, loop_guard=False))
                for img, p in zip(images, prompts)]
    one_by_one = [runtime.generate([r])[0].token_ids for r in requests]
    batched = [a.token_ids for a in runtime.generate(requests)]
    assert batched == one_by_one
    assert all(len(t) > 0 for t in batched)


def test_requests_with_different_image_settings_do_not_share_a_batch(runtime):
    img = Image.new("RGB", (256, 256), (120, 120, 0))
    a = Request(images=(img,), messages=question("a"), image=ImageSettings(splitting=False))
    b = Request(images=(img,), messages=question("a"), image=ImageSettings(splitting=True))
    assert len(plan([a, b], runtime.max_batch())) == 2
    assert runtime.encode([a])["pixels"][0].pixel_values.shape[0] == 1
    assert runtime.encode([b])["pixels"][0].pixel_values.shape[0] > 1  # not the one-tile preparation above


def test_loop_guard_stops_repetition_and_never_changes_tokens():
    guard = LoopGuard(prompt_len=2, max_period=4, min_span=8, min_repeats=4)
    looping = torch.tensor([[9, 9] + [1, 2, 3] * 2 + [5, 6] * 4])
    fresh = torch.tensor([[9, 9] + list(range(10, 24))])
    assert guard(looping, None).tolist() == [True]
    assert guard(fresh, None).tolist() == [False]
    both = torch.cat([looping, fresh])
    assert guard(both, None).tolist() == [True, False]


def test_generation_with_loop_guard_is_a_prefix_of_unguarded(runtime):
    img = Image.new("RGB", (128, 96), (0, 0, 0))
    free = runtime.generate([Request(images=(img,), messages=question("Describe this image."),
                                     generation=GenerationSettings(max_new_tokens=96, loop_guard=False))])[0]
    guarded = runtime.generate([Request(images=(img,), messages=question("Describe this image."),
                                        generation=GenerationSettings(max_new_tokens=96))])[0]
    assert free.token_ids[:len(guarded.token_ids)] == guarded.token_ids


def test_unloadable_local_folder_names_the_model_and_the_fix(tmp_path):
    rt = Runtime(TransformersModel(path=tmp_path / "missing"))
    with pytest.raises(ModelLoadError) as info:
        rt.load()
    message = str(info.value)
    assert f"cannot load model '{tmp_path / 'missing'}'" in message
    assert "the folder does not exist" in message and "model.path" in message


def test_test_tokenizer_round_trips_cyrillic_and_emoji(runtime):
    tok = runtime.processor.tokenizer
    text = "Съешь же ещё этих мягких булок 🍞🥐\nвторая строка ✅"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_max_batch_is_configurable(tiny_model):
    rt = Runtime(TransformersModel(path=tiny_model), RuntimeConfig(max_batch=2))
    img = Image.new("RGB", (64, 64))
    reqs = [Request(images=(img,), messages=question("q")) for _ in range(5)]
    assert [len(b) for b in plan(reqs, rt.max_batch())] == [2, 2, 1]


def test_one_vision_pass_per_image_with_the_answers_of_separate_runs(tiny_model):
    """caption + tags + OCR about one photo at the same image settings encode it once."""
    rt = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"), RuntimeConfig(max_batch=8))
    photos = [Image.new("RGB", (300, 200), (200, 30, 30)), Image.new("RGB", (120, 260), (20, 160, 90))]
    questions = [("Describe this image in detail.", 20), ("List keywords, comma separated.", 8),
                 ("Extract all text from this image.", 14)]
    requests = [Request(images=(photo,), messages=question(q), generation=GenerationSettings(max_new_tokens=n))
                for photo in photos for q, n in questions]
    separate = []
    for r in requests:
        rt.vision_passes = 0
        separate.append(rt.generate([r])[0].token_ids)
        assert rt.vision_passes == 1
    rt.vision_passes = rt.prefill_tokens = 0
    shared = [a.token_ids for a in rt.generate(requests)]
    assert rt.vision_passes == 2  # two photos, six questions
    assert shared == separate
    assert [len(t) <= n for t, (_, n) in zip(shared, questions * 2)] == [True] * 6
    # the prompt up to each question (image tokens included) went through the language model once per photo
    expected = 0
    for k in (0, 3):
        prompts = [rt.encode([r])["input_ids"][0].tolist() for r in requests[k:k + 3]]
        common = len(os.path.commonprefix(prompts))
        assert prompts[0][:common].count(rt.model.config.image_token_id) == prompts[0].count(
            rt.model.config.image_token_id) > 0
        expected += common + sum(len(p) - common for p in prompts)
    assert rt.prefill_tokens == expected


def test_int8_linear_layers_keep_the_sharing_and_stay_close_to_float32(tiny_model):
    """``model.quantize: int8``: every linear layer of both towers is torch's dynamic int8 one;
    three questions about a photo still cost one vision pass and give the answers of separate
    runs; the first step's logits stay within the tolerance README states (cosine >= 0.99 against
    float32; int8 arithmetic may change a greedy token where two are nearly tied)."""
    rt = Runtime(TransformersModel(path=tiny_model, threads=1, quantize="int8"), RuntimeConfig(max_batch=8))
    rt.load()
    assert (rt.dtype, rt.quantize) == ("float32", "int8") and rt.info().as_dict()["quantize"] == "int8"
    kinds = {type(m).__module__ for m in rt.model.modules()}
    assert "torch.ao.nn.quantized.dynamic.modules.linear" in kinds and "torch.nn.modules.linear" not in kinds
    photo = Image.new("RGB", (300, 200), (200, 30, 30))
    requests = [Request(images=(photo,), messages=question(q), generation=GenerationSettings(max_new_tokens=6))
                for q in ("Describe this image.", "List keywords.", "Extract all text.")]
    separate = [rt.generate([r])[0].token_ids for r in requests]
    rt.vision_passes = 0
    assert [a.token_ids for a in rt.generate(requests)] == separate and rt.vision_passes == 1
    full = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"))
    full.load()
    inputs = full.processor(text=full.prompt(requests[0]), images=[photo], return_tensors="pt")
    with torch.inference_mode():
        a, b = (m.model(**inputs).logits[0, -1] for m in (full, rt))
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) >= 0.99


def test_prompts_that_differ_before_the_image_keep_their_own_prefix(tiny_model):
    """A task with its own system message shares the photo's vision pass but not a prefix."""
    rt = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"))
    photo = Image.new("RGB", (200, 150), (90, 40, 160))
    system = {"role": "system", "content": [{"type": "text", "text": "You are a careful archivist."}]}
    requests = [Request(images=(photo,), messages=question("Describe this image."),
                        generation=GenerationSettings(max_new_tokens=10, loop_guard=False)),
                Request(images=(photo,), messages=(system,) + question("Describe this image."),
                        generation=GenerationSettings(max_new_tokens=10, loop_guard=False))]
    separate = [rt.generate([r])[0].token_ids for r in requests]
    rt.vision_passes = rt.prefill_tokens = 0
    assert [a.token_ids for a in rt.generate(requests)] == separate
    assert rt.vision_passes == 1
    assert rt.prefill_tokens == sum(len(rt.encode([r])["input_ids"][0]) for r in requests)


def test_pipeline_prefetch_is_bounded_over_200_files(tmp_path, tiny_model):
    """Decoding runs ahead of the model, but never more than prefetch + one batch of files."""
    import threading

    from smolvlm_watch import config as configmod
    from smolvlm_watch.pipeline import FileJob, Pipeline
    from smolvlm_watch.plugins import Registry

    folder = tmp_path / "many"
    folder.mkdir()
    paths = []
    for i in range(200):
        path = folder / f"f{i:03d}.png"
        Image.new("RGB", (40, 30), (i, 0, 0)).save(path)
        paths.append(path)
    config = configmod.parse({"model": {"path": str(tiny_model), "threads": 1},
                              "tasks": {"caption": {"max_new_tokens": 2}},
                              "runtime": {"prefetch": 4, "max_batch": 4},
                              "watches": [{"path": str(folder), "tasks": ["caption"], "outputs": ["json"]}]},
                             tmp_path)
    pipeline = Pipeline(config, Registry(entrypoints=False), Registry(entrypoints=False).engine(config))
    lock, state = threading.Lock(), {"prepared": 0, "yielded": 0, "max_ahead": 0}
    original = pipeline.prepare

    def counting_prepare(*args, **kwargs):
        result = original(*args, **kwargs)
        with lock:
            state["prepared"] += 1
            state["max_ahead"] = max(state["max_ahead"], state["prepared"] - state["yielded"])
        return result

    pipeline.prepare = counting_prepare
    done = []
    for _, result in pipeline.process_many([FileJob(p, config.watches[0]) for p in paths]):
        with lock:
            state["yielded"] += 1
        done.append(result)
    assert [r.path for r in done] == [str(p) for p in paths]  # in order
    assert all(r.status == "done" for r in done)
    assert 1 <= state["max_ahead"] <= 4 + 4, state
    assert pipeline.engine.vision_passes == 200


def test_questions_split_across_batches_still_encode_their_photo_once(tiny_model):
    rt = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"), RuntimeConfig(max_batch=2))
    photos = [Image.new("RGB", (160, 120), (10, 90, 200)), Image.new("RGB", (90, 90), (200, 200, 0))]
    requests = [Request(images=(photo,), messages=question(q), generation=GenerationSettings(max_new_tokens=6))
                for photo in photos for q in ("Caption it.", "Keywords?", "Text?")]
    # a photo's questions are not mixed with the next's; on a CPU (whole) they are not split either
    assert plan(requests, rt.max_batch()) == [[0, 1], [2], [3, 4], [5]]
    assert plan(requests, rt.max_batch(), whole=True) == [[0, 1, 2], [3, 4, 5]]
    separate = [rt.generate([r])[0].token_ids for r in requests]
    rt.vision_passes, rt.prefill_tokens = 0, 0
    assert [a.token_ids for a in rt.generate(requests)] == separate
    assert rt.vision_passes == 2
    whole = rt.prefill_tokens  # each photo's prefix once
    rt.prefill_tokens = 0
    split = [a for batch in plan(requests, 2) for a in rt._generate([requests[i] for i in batch], {})]
    assert [a.token_ids for a in split] == separate and whole < rt.prefill_tokens


def test_compiled_static_cache_decoding_gives_the_same_answers(tiny_model):
    """runtime.compile: the shared prefix moves into a static KV cache and the decode step is
    compiled; the answers stay token for token those of the default path."""
    from torch._dynamo.utils import counters

    photo = Image.new("RGB", (180, 120), (40, 140, 60))
    requests = [Request(images=(photo,), messages=question(q), generation=GenerationSettings(max_new_tokens=8))
                for q in ("Caption it.", "Keywords?")]
    plain = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"))
    compiled = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"), RuntimeConfig(compile=True))
    expected = [a.token_ids for a in plain.generate(requests)]
    counters["stats"].clear()
    assert [a.token_ids for a in compiled.generate(requests)] == expected
    assert compiled.vision_passes == 1
    assert hasattr(compiled.model, "_compiled_call") and counters["stats"]["unique_graphs"] >= 1
    assert not hasattr(plain.model, "_compiled_call")


def test_prefetch_threads_prepare_the_pixels_once_per_image_and_settings(tmp_path, tiny_model):
    """With prepare_ahead (the GPU default) and the model loaded, every resize/tile/normalise runs
    in a prefetch thread, once per file and image setting, never in the thread running the model."""
    import threading

    from smolvlm_watch import config as configmod
    from smolvlm_watch.pipeline import FileJob, Pipeline
    from smolvlm_watch.plugins import Registry

    paths = [make_image(tmp_path / f"p{i}.png", (120 + i, 90), (i * 20, 0, 0)) for i in range(8)]
    config = configmod.parse({"model": {"path": str(tiny_model), "threads": 1},
                              "tasks": {"caption": {"max_new_tokens": 2}, "tags": {"max_new_tokens": 2},
                                        "ocr": {"max_new_tokens": 2, "image_splitting": True}},
                              "runtime": {"prefetch": 3, "prepare_ahead": True},
                              "watches": [{"path": str(tmp_path), "tasks": ["caption", "tags", "ocr"],
                                           "outputs": ["json"]}]}, tmp_path)
    runtime = Registry(entrypoints=False).engine(config)
    runtime.load()
    calls: list[str] = []

    class Recording:
        """The image processor, each call noted with the thread it ran in."""

        def __init__(self, real):
            self.real = real

        def __call__(self, *args, **kwargs):
            calls.append(threading.current_thread().name)
            return self.real(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.real, name)

    runtime.processor.image_processor = Recording(runtime.processor.image_processor)
    pipeline = Pipeline(config, Registry(entrypoints=False), runtime)
    results = [r for _, r in pipeline.process_many([FileJob(p, config.watches[0]) for p in paths])]
    assert [r.status for r in results] == ["done"] * 8
    assert len(calls) == 8 * 2  # caption and tags share one tile's preparation, OCR has its own tiles
    assert all(name.startswith("prefetch") for name in calls), calls
    assert runtime.vision_passes == 8 * 2


def test_tiles_of_several_images_in_one_vision_pass_give_the_same_answers(tiny_model):
    """The GPU way (many tiles, of several images, per vision pass) answers as tile by tile does."""
    photos = [Image.new("RGB", (250, 130), (200, 60, 10)), Image.new("RGB", (100, 240), (0, 90, 180))]
    requests = [Request(images=(photo,), messages=question(q), image=ImageSettings(splitting=True),
                        generation=GenerationSettings(max_new_tokens=8, loop_guard=False))
                for photo in photos for q in ("Caption it.", "Keywords?")]
    one_by_one = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"))
    expected = [a.token_ids for a in one_by_one.generate(requests)]
    many = Runtime(TransformersModel(path=tiny_model, threads=1, dtype="float32"), RuntimeConfig(max_batch=4))
    many._tiles_per_pass = lambda: 7
    calls = []
    many.load()
    real = many.model.model.get_image_features
    many.model.model.get_image_features = lambda values, *a, **k: calls.append(values.shape[1]) or real(values, *a, **k)
    assert [a.token_ids for a in many.generate(requests)] == expected
    tiles = [len(many.encode([r])["pixels"][0].pixel_values) for r in requests[::2]]
    assert sum(calls) == sum(tiles) > 7 and max(calls) == 7 and many.vision_passes == 2


def test_gpu_batch_default_follows_free_memory():
    from transformers import LlamaConfig

    from smolvlm_watch.batching import batch_for_memory
    from smolvlm_watch.testing import PRESETS

    big, small, gib = LlamaConfig(**PRESETS["2.2B"]["text"]), LlamaConfig(**PRESETS["256M"]["text"]), 2**30
    assert batch_for_memory(8 * gib, big, 2) == 10  # 384 MiB of bf16 KV cache per 2,048-token request
    assert batch_for_memory(80 * gib, big, 2) == 64
    assert batch_for_memory(4 * gib, small, 2) == 45  # 45 MiB per request
    assert batch_for_memory(100 * 2**20, big, 2) == 1


def test_attention_is_sdpa_unless_a_gpu_has_flash_attn(monkeypatch):
    import importlib.util

    from smolvlm_watch.runtime import default_attention

    assert default_attention("cpu") == "sdpa"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else None)
    assert default_attention("cuda") == "flash_attention_2" and default_attention("cpu") == "sdpa"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert default_attention("cuda") == "sdpa"


def test_on_cpu_the_model_thread_prepares_pixels_once_per_image_and_settings(tiny_model):
    import threading

    rt = Runtime(TransformersModel(path=tiny_model, threads=1))
    rt.load()
    real, calls = rt.processor.image_processor, []
    rt.processor.image_processor = lambda *a, **k: calls.append(threading.current_thread().name) or real(*a, **k)
    photo = Image.new("RGB", (160, 100), (5, 50, 150))
    requests = [Request(images=(photo,), messages=question(q), generation=GenerationSettings(max_new_tokens=2))
                for q in ("a", "b", "c")]
    assert rt.prepares_ahead is False  # prepare_ahead defaults to GPU only
    rt.generate(requests)
    assert calls == [threading.current_thread().name]


def test_the_prefetch_window_fills_a_batch_by_default(tmp_path, tiny_model):
    """Unset, runtime.prefetch follows the batch size (4 files on CPU, at least a batch; a GPU's larger batch is not
    starved by a 4-file window), and still bounds the files decoded ahead."""
    import time as timer

    from smolvlm_watch import config as configmod
    from smolvlm_watch.pipeline import FileJob, Pipeline
    from smolvlm_watch.plugins import Registry

    paths = [make_image(tmp_path / f"w{i:02d}.png", (40, 30), (i * 6, 0, 0)) for i in range(40)]
    raw = {"model": {"path": str(tiny_model), "threads": 1}, "tasks": {"caption": {"max_new_tokens": 1}},
           "watches": [{"path": str(tmp_path), "tasks": ["caption"], "outputs": ["json"]}]}
    cpu = configmod.parse(raw, tmp_path)
    engine = Registry(entrypoints=False).engine(cpu)
    assert engine.max_batch() == 2  # a CPU's batch (measured: bench/memory.py, README "Performance")
    assert Pipeline(cpu, Registry(entrypoints=False), engine).prefetch() == 4
    config = configmod.parse({**raw, "runtime": {"max_batch": 8}}, tmp_path)
    pipeline = Pipeline(config, Registry(entrypoints=False), Registry(entrypoints=False).engine(config))
    assert pipeline.prefetch() == 8
    prepared, ran, most = [0], [0], [0]
    original_prepare, original_run = pipeline.prepare, pipeline.run

    def counting_prepare(*args):
        result = original_prepare(*args)
        prepared[0] += 1
        return result

    def slow_run(items):
        timer.sleep(0.3)  # a busy model: decoding runs ahead as far as the window lets it
        most[0] = max(most[0], prepared[0] - ran[0] - len(items))  # decoded, waiting behind this batch
        ran[0] += len(items)
        return original_run(items)

    pipeline.prepare, pipeline.run = counting_prepare, slow_run
    assert [r.status for _, r in pipeline.process_many([FileJob(p, config.watches[0]) for p in paths])] == ["done"] * 40
    assert 4 < most[0] <= 8, most
