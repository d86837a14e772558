"""How requests are grouped and padded for the model: pure functions of the requests, no model.

The runtime runs what is planned here: requests that can share a forward pass are batched,
those about one image packed together so the image and the prompt text they share are computed
once (``shared_prefixes``), rows padded for the prefix cache and the questions (``padded``),
answers cut at their end (``until_end``), degenerate loops stopped (``LoopGuard``), and the GPU
batch sized from its free memory (``batch_for_memory``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from .engine import Request


def plan(requests: Sequence[Request], size: int, whole: bool = False) -> list[list[int]]:
    """Group requests that can share a forward pass: same image settings, image count and
    decoding rules (``max_new_tokens`` may differ: each answer is cut to its own). Requests
    about the same images are packed whole into one batch where they fit, so their images
    and shared prompt prefix are computed once. Batches hold at most ``size`` requests; with
    ``whole`` the questions about one image set are never split, and more of them than ``size``
    make a batch of their own (on a CPU, whose small batch bounds memory: splitting them would
    prefill their image twice to save one row of cache)."""
    groups: dict[Any, dict[tuple, list[int]]] = {}
    for i, r in enumerate(requests):
        frames = len(r.video.frames) if r.video is not None else None
        key = (r.image, len(r.images), frames, r.generation.min_new_tokens, r.generation.loop_guard)
        groups.setdefault(key, {}).setdefault(image_ids(r.images) or (i,), []).append(i)
    batches: list[list[int]] = []
    for by_images in groups.values():
        current: list[int] = []
        for members in by_images.values():
            step = len(members) if whole else size
            for k in range(0, len(members), step):
                chunk = members[k:k + step]
                if current and len(current) + len(chunk) > size:
                    batches.append(current)
                    current = []
                current = current + chunk
        batches.append(current)
    return batches


def image_ids(images: Sequence[Image.Image]) -> tuple[int, ...]:
    """Which images these are: requests about the same ones may share their preparation and
    encoding (the objects stay alive for as long as a request or a cache entry keys on them)."""
    return tuple(id(img) for img in images)


def shared_prefixes(rows: list[list[int]], keys: list[Any], image_token: int) -> list[tuple[int, int]]:
    """For each prompt: the row whose prefix it reuses, and that prefix's length in tokens.

    Prompts about the same images share their longest common prefix when it holds every image
    token (the image features go in with the prefix); otherwise each keeps its own. Every prompt
    keeps at least its last token, which generate runs to produce the first answer token."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    shares: list[tuple[int, int]] = [(i, len(row) - 1) for i, row in enumerate(rows)]
    for members in groups.values():
        first, limit = rows[members[0]], min(len(rows[i]) for i in members) - 1
        common = next((k for k in range(limit) if any(rows[i][k] != first[k] for i in members)), limit)
        last_image = max((k for i in members for k, t in enumerate(rows[i]) if t == image_token), default=-1)
        if len(members) > 1 and common > last_image:
            for i in members:
                shares[i] = (members[0], common)
    return shares


def padded(rows: list[list[int]], pad: int, left: bool, device: str | None):
    """Token rows as one (ids, mask) pair of tensors on ``device``, padded on the left or the right."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def until_end(ids: list[int], stop: set[int]) -> list[int]:
    """Generated ids up to (not including) the first end or padding token."""
    for i, t in enumerate(ids):
        if t in stop:
            return ids[:i]
    return ids


def batch_for_memory(free_bytes: int, text_config: Any, itemsize: int, tokens: int = 2048) -> int:
    """How many requests half of ``free_bytes`` holds the KV caches of, between 1 and 64. Each
    is counted at ``tokens`` (a 13-tile photo's prompt plus a long answer); the other half is
    left to activations, the vision tower and the allocator."""
    kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    per_request = 2 * text_config.num_hidden_layers * kv_heads * head_dim * tokens * itemsize
    return max(1, min(64, int(free_bytes // 2 // per_request)))


class LoopGuard:
    """A StoppingCriteria that ends a sequence once its tail is one short unit repeated many times.

    It only cuts an answer short, never changes a token, so guarded output is always a prefix of
    unguarded greedy output.
    """

    def __init__(self, prompt_len: int, max_period: int = 8, min_span: int = 24, min_repeats: int = 4):
        self.prompt_len = prompt_len
        self.max_period = max_period
        self.min_span = min_span
        self.min_repeats = min_repeats

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids[:, self.prompt_len:]
        for period in range(1, self.max_period + 1):
            span = max(self.min_span, period * self.min_repeats)
            span -= span % period
            if generated.shape[1] < span:
                break
            tail = generated[:, -span:]
            done |= (tail == tail[:, -period:].repeat(1, span // period)).all(dim=1)
        return done


class Cancelled:
    """A StoppingCriteria that ends every sequence once ``event`` is set (see ``Runtime.cancel``)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
