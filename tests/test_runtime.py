"""The runtime against transformers' own reference usage, and its batching and loop guard."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from conftest import make_image
from smolvlm_watch.config import ImageSettings, ModelConfig, RuntimeConfig
from smolvlm_watch.media import load_image
from smolvlm_watch.runtime import GenerationSettings, LoopGuard, ModelLoadError, Request, Runtime, question


@pytest.fixture(scope="module")
def runtime(tiny_model):
    rt = Runtime(ModelConfig(path=tiny_model, threads=1))
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

    media = load_image(path)
    request = Request(images=media.images, messages=question("Describe this image."),
                      generation=GenerationSettings(max_new_tokens=24, loop_guard=False))
    ours = runtime.encode([request])
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(ours["pixel_values"], ref["pixel_values"])
    assert torch.equal(ours["pixel_attention_mask"], ref["pixel_attention_mask"])
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
    assert len(runtime._plan([a, b])) == 2
    assert runtime.encode([a])["pixel_values"].shape[1] == 1
    assert runtime.encode([b])["pixel_values"].shape[1] > 1


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
    rt = Runtime(ModelConfig(path=tmp_path / "missing"))
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
    rt = Runtime(ModelConfig(path=tiny_model), RuntimeConfig(max_batch=2))
    img = Image.new("RGB", (64, 64))
    reqs = [Request(images=(img,), messages=question("q")) for _ in range(5)]
    assert [len(b) for b in rt._plan(reqs)] == [2, 2, 1]
