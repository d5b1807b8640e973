"""KV-cache layout: page sizes, groups, blocks, tokens and concurrency, as vLLM v0.19 computes them.

Mirrors ``vllm/v1/kv_cache_interface.py`` and ``vllm/v1/core/kv_cache_utils.py``:

* page (one block of ``block_size`` tokens, one layer): full/sliding/chunked attention
  ``2 x block x kv_heads_per_gpu x head_dim x bytes``; MLA ``block x (kv_lora_rank +
  qk_rope_head_dim) x bytes`` (one latent, not split over TP);
* one group when every layer has the same spec; otherwise (hybrid models such as
  gpt-oss, Gemma 2/3, Llama 4) layers are grouped by spec into groups of equal size
  (the smallest type's count, or the largest when that is < 1.5x the smallest),
  and every group shares the same pages;
* ``num_blocks = available // page // group_size``; tokens ``= num_blocks // groups x block``;
* per request at ``max_model_len``: full ``cdiv(L, block)`` blocks, sliding window
  ``cdiv(min(window - 1 + max_num_batched_tokens, L), block) + 1``, chunked local
  ``cdiv(min(chunk + max_num_batched_tokens, L), block)``;
  max concurrency ``= num_blocks / sum over groups``; one request must fit or vLLM
  stops with "... KV cache is needed, which is larger than the available KV cache memory".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import ceil


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """The KV cache of one attention layer on one GPU."""

    kind: str        # full | sliding | chunked | mla
    page_bytes: int  # one block of tokens
    window: int = 0  # sliding window or chunk size

    def blocks_for(self, max_model_len: int, batched_tokens: int, block: int) -> int:
        """Blocks one request of ``max_model_len`` tokens needs in this layer."""
        if self.kind == "sliding":
            return cdiv(min(self.window - 1 + batched_tokens, max_model_len), block) + 1
        if self.kind == "chunked":
            return cdiv(min(self.window + batched_tokens, max_model_len), block)
        return cdiv(max_model_len, block)


@dataclass(frozen=True, slots=True)
class Groups:
    """KV cache groups of the whole model: each a spec and the layer indices in it."""

    groups: tuple[tuple[LayerSpec, tuple[int, ...]], ...]

    @property
    def page_bytes(self) -> int:
        return self.groups[0][0].page_bytes

    def size_on(self, layers: range) -> int:
        """Group size on a worker that holds ``layers`` (the largest projected group)."""
        return max((sum(1 for i in idx if i in layers) for _, idx in self.groups), default=0)

    def blocks_per_request(self, max_model_len: int, batched_tokens: int, block: int) -> int:
        return sum(spec.blocks_for(max_model_len, batched_tokens, block) for spec, _ in self.groups)


def group_layers(specs: list[LayerSpec]) -> Groups:
    """vLLM's grouping (``get_kv_cache_groups``) for the layers' specs, in layer order."""
    return _group_layers(tuple(specs))


@lru_cache(maxsize=256)
def _group_layers(specs: tuple[LayerSpec, ...]) -> Groups:
    by_spec: dict[LayerSpec, list[int]] = {}
    for i, spec in enumerate(specs):
        by_spec.setdefault(spec, []).append(i)
    if len(by_spec) == 1:
        spec, idx = next(iter(by_spec.items()))
        return Groups(((spec, tuple(idx)),))
    counts = [len(v) for v in by_spec.values()]
    group_size = min(counts)
    if max(counts) < group_size * 1.5:
        group_size = max(counts)
    out: list[tuple[LayerSpec, tuple[int, ...]]] = []
    for spec, idx in by_spec.items():
        n = cdiv(len(idx), group_size)
        for i in range(n):
            out.append((spec, tuple(idx[i::n])))
    return Groups(tuple(out))


@dataclass(frozen=True, slots=True)
class KvLayout:
    """What the available memory buys on one worker."""

    num_blocks: int
    tokens: int
    max_concurrency: float
    needed_bytes: int  # for one request at max_model_len
    per_token_bytes: float


def layout(groups: Groups, layers: range, available: float, *, block: int, max_model_len: int,
           batched_tokens: int) -> KvLayout:
    """Blocks, tokens and concurrency for ``available`` bytes on a worker holding ``layers``."""
    size = groups.size_on(layers)
    page = groups.page_bytes
    blocks = max(int(available // page // size), 0) if size else 0
    per_request = groups.blocks_per_request(max_model_len, batched_tokens, block)
    tokens = blocks // len(groups.groups) * block
    needed = size * page * per_request
    per_token = size * page * len(groups.groups) / block
    return KvLayout(blocks, tokens, blocks / per_request if per_request else 0.0, needed, per_token)


def estimate_max_len(groups: Groups, layers: range, available: float, *, block: int, limit: int,
                     batched_tokens: int) -> int:
    """vLLM's ``estimate_max_model_len``: the largest length whose one request fits (binary search)."""
    size = groups.size_on(layers)
    page = groups.page_bytes

    def fits(length: int) -> bool:
        return size * page * groups.blocks_per_request(length, batched_tokens, block) <= available

    if not fits(1):
        return 0
    lo, hi, best = 1, limit, 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def page_bytes(kind: str, *, block: int, kv_heads: int, head_dim: int, kv_bytes: float,
               latent_dim: int = 0) -> int:
    """One page: ``block`` tokens of one layer."""
    if kind == "mla":
        return int(ceil(block * latent_dim * kv_bytes))
    return int(ceil(2 * block * kv_heads * head_dim * kv_bytes))
