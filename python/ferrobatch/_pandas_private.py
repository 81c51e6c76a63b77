"""Every use of pandas' private API by :mod:`ferrobatch.pandas`, in one place.

``merge`` lets pandas resolve its arguments and key dtypes with its own merge operation
(``pandas.core.reshape.merge._MergeOperation`` / ``_CrossMergeOperation``), reads the keys it
settled on (``left_join_keys`` / ``right_join_keys``) and builds the result from the kernel's
row indexers by replacing the operation's ``_get_join_indexers``. These are not public and
change between pandas releases, so they are used only on the pandas versions the test suite
runs on (:data:`TESTED`); on any other version the drop-ins run pandas itself after a
``FallbackWarning``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

TESTED = ((3, 1), (3, 1))
"""Oldest and newest (major, minor) pandas releases whose internals are tested."""


def version() -> tuple[int, int]:
    """The installed pandas as (major, minor)."""
    return _version(pd.__version__)


def _version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def unsupported() -> str | None:
    """Why the private API may not be used with the installed pandas, or None."""
    if TESTED[0] <= version() <= TESTED[1]:
        return None
    lo, hi = (f"{a}.{b}" for a, b in TESTED)
    return (
        f"pandas {pd.__version__} is outside the versions its internals are tested on ({lo}-{hi})"
    )


def merge_operation(left: pd.DataFrame, right: pd.DataFrame, **kw: Any) -> Any:
    """pandas' own merge operation for these arguments (raising pandas' own errors)."""
    from pandas.core.reshape import merge as pdm

    return pdm._MergeOperation(left, right, **kw)


def cross_merge_operation(left: pd.DataFrame, right: pd.DataFrame, **kw: Any) -> Any | None:
    """pandas' cross merge operation, or None before pandas 3.1 (which has none)."""
    from pandas.core.reshape import merge as pdm

    op = getattr(pdm, "_CrossMergeOperation", None)
    return None if op is None else op(left, right, **kw)


def join_keys(op: Any) -> tuple[list[Any], list[Any]]:
    """The key arrays pandas settled on, after its dtype coercion."""
    return list(op.left_join_keys), list(op.right_join_keys)


def result(op: Any, left_indexer: np.ndarray, right_indexer: np.ndarray) -> pd.DataFrame:
    """The merge result pandas builds from these row indexers (-1: no row)."""
    indexers = (left_indexer, right_indexer)
    op._get_join_indexers = lambda: indexers
    return op.get_result()
