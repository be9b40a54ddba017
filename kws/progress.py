"""Progress bars where tqdm is installed (it comes with kws[train]); a plain iterator otherwise."""
from __future__ import annotations


def progress(iterable, **kw):
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return iterable
    return tqdm(iterable, **kw)
