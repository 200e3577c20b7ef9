"""Process memory: glibc asked to keep what XLA:CPU frees (`keep_freed_memory`).

Standard library only, so that every main can call it first at no start-up cost;
`speed` records whether it took effect with every timing.
"""
import os
import sys

#: Set to 0 to leave glibc's allocator as it is (`keep_freed_memory`).
KEEP_MEMORY_ENV = "SINGLESEG_KEEP_MEMORY"
#: mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_memory_kept = False


def keep_freed_memory() -> bool:
  """Asks glibc, at run time, to map no more blocks of their own and to give no freed
  memory back from the top of its main heap (below 2 GiB); returns whether it did.
  Every main calls it first (`experiments.cli.run`).

  XLA:CPU allocates a training step's scratch buffer afresh on every call (45-68 MB
  for the cat net), above the largest mmap threshold glibc allows (32 MB), so by
  default each step maps it, page-faults on all of it (about 3,000 minor faults a
  step) and unmaps it; served from the heap, it is reused (docs/speed.md). Blocks
  that other threads allocate come from per-thread heaps of at most 64 MiB, which
  glibc still maps and unmaps (the car net's larger buffers keep faulting). Numbers
  do not change, only speed; the price is that a process keeps the memory it freed.

  Nothing is changed with SINGLESEG_KEEP_MEMORY=0, off glibc, or where the
  environment already tunes glibc's allocator (a MALLOC_* variable or a
  glibc.malloc tunable, as `--malloc_tune`'s re-exec sets): those settings stand.
  """
  global _memory_kept
  tuned = (any(k.startswith("MALLOC_") for k in os.environ)
           or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))
  if os.environ.get(KEEP_MEMORY_ENV, "1") == "0" or tuned or sys.platform != "linux":
    return False
  try:
    import ctypes  # noqa: PLC0415 (a Python without _ctypes keeps glibc's defaults)
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl's mallopt does nothing)
    mallopt = libc.mallopt
  except (ImportError, OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  _memory_kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
  return _memory_kept


def freed_memory_kept() -> bool:
  """Whether `keep_freed_memory` took effect in this process (recorded with timings)."""
  return _memory_kept
