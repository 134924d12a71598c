"""The ``local`` executor: every piece in this process, one after the other (the default)."""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

from . import Executor, Resources, register


@register
class LocalExecutor(Executor):
    name = "local"

    def __init__(self, **_ignored: object) -> None:
        pass  # cluster options (address, resources) mean nothing here

    def map(self, fn: Callable, items: Sequence, *, resources: Resources | None = None, retries: int = 0,
            desc: str = "", show_progress: bool = True) -> Iterator[tuple[object, object]]:
        for item in items:
            yield item, fn(item)
