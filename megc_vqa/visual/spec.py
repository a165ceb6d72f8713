"""The sampler spec and the method names of the visual inputs, apart from the OpenCV modules so recipes,
the training record and the command-line parsers check them without loading OpenCV. What a spec samples is
in :mod:`megc_vqa.visual.samplers`; the flow methods are :mod:`megc_vqa.visual.flow`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from megc_vqa.limits import SAMPLED_FRAMES

SAMPLER_GRAMMAR = (
    "PART('+'PART)* with PART one of: oao | uniform:N (N >= 1) | flow | diff; at most one of oao/uniform:N"
)
APEX_METHODS: tuple[str, ...] = ("motion", "midpoint")
FLOW_METHODS: tuple[str, ...] = ("farneback", "tvl1")
_UNIFORM = re.compile(r"uniform:(\d+)")


@dataclass(frozen=True)
class SamplerSpec:
    """A parsed sampler spec: which key frames, and whether to add flow and/or diff images."""

    frames: str | None  # "oao", "uniform" or None
    n_frames: int  # 3 for oao, N for uniform:N, 0 without key frames
    flow: bool
    diff: bool

    def __str__(self) -> str:
        parts = []
        if self.frames == "oao":
            parts.append("oao")
        elif self.frames == "uniform":
            parts.append(f"uniform:{self.n_frames}")
        if self.flow:
            parts.append("flow")
        if self.diff:
            parts.append("diff")
        return "+".join(parts)


def parse_sampler(spec: str) -> SamplerSpec:
    """Parse ``oao``, ``uniform:8``, ``oao+flow``, ``uniform:8+flow+diff``...; ValueError shows the grammar."""

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid sampler spec {spec!r}: {why}. Accepted: {SAMPLER_GRAMMAR}")

    if not isinstance(spec, str) or not spec.strip():
        raise bad("empty")
    frames: str | None = None
    n_frames = 0
    flow = diff = False
    seen: set[str] = set()
    for part in (p.strip().lower() for p in spec.split("+")):
        kind = part.split(":", 1)[0]
        if kind in seen or (kind in ("oao", "uniform") and frames is not None):
            raise bad(f"{part!r} repeats or conflicts with an earlier part")
        seen.add(kind)
        if part == "oao":
            frames, n_frames = "oao", 3
        elif match := _UNIFORM.fullmatch(part):
            n_frames = int(match.group(1))
            if n_frames < 1:
                raise bad("uniform:N needs N >= 1")
            if n_frames > SAMPLED_FRAMES.value:
                raise bad(f"uniform:{n_frames:,} is over the {SAMPLED_FRAMES.hint()}")
            frames = "uniform"
        elif part == "flow":
            flow = True
        elif part == "diff":
            diff = True
        else:
            raise bad(f"unknown part {part!r}")
    return SamplerSpec(frames, n_frames, flow, diff)
