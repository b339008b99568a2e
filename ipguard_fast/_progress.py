"""One progress bar for every long stage (search, references, their outputs): tqdm when
shown, nothing otherwise, closed however the stage ends."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(total: int, desc: str, unit: str, show: bool = True) -> Iterator[Any]:
    """A tqdm bar of `total` `unit`s, or None when `show` is False (callers test for None)."""
    if not show:
        yield None
        return
    from tqdm.auto import tqdm   # loaded only when a bar is shown: `import ipguard_fast` stays light

    bar = tqdm(total=total, desc=desc, unit=unit)
    try:
        yield bar
    finally:
        bar.close()
