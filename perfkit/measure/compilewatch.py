"""Counting compilations: the graphs torch.compile's dynamo captures and the binaries Triton's JIT builds.

The runner reads the counts around a case's phases to keep two labels true:
- a `compile` row ran compiled code: dynamo captured at least one graph for the case (a case where it captured none
  ran eagerly, and is an error, never a speed result);
- no timed repetition and no energy window included a compilation: one that did is counted in the row
  (`compiles_in_window`) and flagged in its timing note.

    with CompileWatch() as watch:
        ...                        # the work
    watch.dynamo_graphs            # graphs captured since the block began
    watch.triton_binaries          # Triton JIT compilations since the block began (None where not countable)

Triton's hook (knobs.runtime.jit_post_compile_hook) fires for every kernel the JIT makes ready, also when it comes
from Triton's disk cache: a count is of compilations or cache loads, each a stall a timed repetition must not hold.
Newer torch calls the same hook for Inductor's kernels; older torch does not, and a compile row's own compilations
then show as dynamo graphs only (each new graph is compiled by Inductor on capture).
"""
from __future__ import annotations

import os


def _dynamo_graphs() -> int:
    try:
        from torch._dynamo.utils import counters
    except Exception:  # a torch without dynamo captures nothing
        return 0
    return int(counters["stats"]["unique_graphs"])


def triton_uncountable_reason() -> str | None:
    """Why Triton compilations cannot be counted here, or None when they can."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "the Triton interpreter compiles nothing"
    try:
        from triton import knobs
    except Exception:
        return "this triton has no runtime.jit_post_compile_hook (triton 3.4 or newer has)"
    if not hasattr(knobs.runtime, "jit_post_compile_hook"):
        return "this triton has no runtime.jit_post_compile_hook (triton 3.4 or newer has)"
    return None


class CompileWatch:
    """Counts dynamo graphs and Triton JIT compilations while the block runs (see the module docstring). The Triton
    hook is chained: a hook installed before is still called, and it is restored at exit."""

    def __init__(self):
        self.triton_note = triton_uncountable_reason()
        self._graphs_at_start = 0
        self._graphs_at_end: int | None = None
        self._triton = 0
        self._previous_hook = None
        self._knobs = None

    def __enter__(self) -> CompileWatch:
        self._graphs_at_start = _dynamo_graphs()
        if self.triton_note is None:
            from triton import knobs

            self._knobs = knobs
            self._previous_hook = knobs.runtime.jit_post_compile_hook
            knobs.runtime.jit_post_compile_hook = self._on_compile
        return self

    def _on_compile(self, *args, **kwargs):
        self._triton += 1
        if self._previous_hook is not None:
            return self._previous_hook(*args, **kwargs)
        return None

    def __exit__(self, *exc) -> None:
        self._graphs_at_end = _dynamo_graphs()  # the block's count, whatever compiles after it
        if self._knobs is not None:
            self._knobs.runtime.jit_post_compile_hook = self._previous_hook
            self._knobs = None

    @property
    def dynamo_graphs(self) -> int:
        end = self._graphs_at_end if self._graphs_at_end is not None else _dynamo_graphs()
        return end - self._graphs_at_start

    @property
    def triton_binaries(self) -> int | None:
        return None if self.triton_note is not None else self._triton

    def total(self) -> int:
        """Every compilation counted so far (dynamo graphs plus Triton binaries, where countable)."""
        return self.dynamo_graphs + (self.triton_binaries or 0)
