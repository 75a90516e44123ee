"""Named registries (algorithm families, activations, losses) that packages can extend.

A :class:`Registry` is a read-only mapping from a name to an entry, plus ``register``. An entry
comes from one of three places:

* bcd_jax itself (the built-ins, registered when their module is imported);
* any module that calls ``register`` — a script, a notebook, or a module named on the command
  line with ``bcd-jax run --import my_module``;
* an installed package that declares it in the registry's Python entry-point group (for
  algorithm families ``bcd_jax.algorithms``), loaded the first time the name is looked up, so
  ``pip install`` is all a user needs for ``bcd-jax run`` and for resuming a checkpoint.

Looking up an unknown name raises a ``ValueError`` that lists the known names and says how to
make the missing one importable.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry", "import_modules"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A name -> entry mapping that modules and installed packages extend.

    Args:
      kind: what an entry is, for messages (``"algorithm"``).
      group: the entry-point group scanned for entries of installed packages, or None.
      check: called on every entry before it is registered; raises ``ValueError`` for a bad one.
      on_change: called as ``on_change(name, entry)`` after an entry is registered and as
        ``on_change(name, None)`` after it is removed (the algorithm registry records there which
        class stands for which name).
    """

    def __init__(
        self,
        kind: str,
        group: str | None = None,
        check: Callable[[str, T], None] | None = None,
        on_change: Callable[[str, T | None], None] | None = None,
    ):
        self.kind, self.group, self._check, self._on_change = kind, group, check, on_change
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}  # name -> the module that registered it (for messages)
        self._scanned = False

    # -- Mapping ----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            self._load_entry_point(name)
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name) -> bool:
        if not isinstance(name, str):
            return False
        if name not in self._entries:
            self._load_entry_point(name)
        return name in self._entries

    # -- extending -------------------------------------------------------------------------------
    def register(self, name: str, entry: T, *, overwrite: bool = False, module: str | None = None) -> T:
        """Adds ``entry`` under ``name`` and returns it; an existing name needs ``overwrite=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        if name in self._entries and not overwrite:
            raise ValueError(f"name: {self.kind} {name!r} is already registered; pass overwrite=True to replace it")
        if self._check is not None:
            self._check(name, entry)
        self._entries[name] = entry
        self._modules[name] = module or getattr(entry, "__module__", None) or "?"
        if self._on_change is not None:
            self._on_change(name, entry)
        return entry

    def unregister(self, name: str) -> None:
        """Removes ``name`` (a no-op for an unknown name): for tests and notebooks."""
        self._entries.pop(name, None)
        self._modules.pop(name, None)
        if self._on_change is not None:
            self._on_change(name, None)

    def module_of(self, name: str) -> str | None:
        """The module that registered ``name`` (recorded in checkpoints, named when it is missing)."""
        return self._modules.get(name)

    # -- lookups ---------------------------------------------------------------------------------
    def get_entry(self, name: str, *, where: str | None = None, module: str | None = None) -> T:
        """The entry for ``name``; an unknown name is a ``ValueError`` that says how to provide it.

        ``where`` names the argument in the message (default: the registry's kind); ``module``
        is the module that registered the name when it was recorded (a checkpoint's), for the hint.
        """
        if isinstance(name, str) and name in self:
            return self._entries[name]
        where = where or self.kind
        hint = f"; it was registered by the module {module!r}" if module and module != "?" else ""
        how = "import the module that registers it (bcd-jax: --import MODULE)"
        if self.group:
            how += f", or install a package that declares it in the {self.group!r} entry-point group"
        raise ValueError(f"{where}: unknown {self.kind} {name!r}{hint}; expected one of {sorted(self)} ({how})")

    def _entry_points(self):
        if self.group is None:
            return ()
        try:
            return importlib.metadata.entry_points(group=self.group)
        except Exception:  # noqa: BLE001 - a broken installation must not break the built-ins
            return ()

    def _load_entry_point(self, name: str) -> None:
        for point in self._entry_points():
            if point.name == name and name not in self._entries:
                entry = point.load()  # importing the module may register the name itself (a decorator)
                if name not in self._entries:
                    self.register(name, entry, module=point.value.split(":")[0])

    def load_all(self) -> None:
        """Loads every entry point of the group (``names`` shows installed entries before they are used)."""
        if self._scanned:
            return
        for point in self._entry_points():
            self._load_entry_point(point.name)
        self._scanned = True


def import_modules(names) -> None:
    """Imports each module of ``names`` (``bcd-jax --import``), so that it can register entries.

    A module that cannot be imported is a ``ValueError`` naming it (``--import``).
    """
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(
                f"--import: cannot import the module {name!r} ({exc}); expected a module on the Python path "
                "(PYTHONPATH or an installed package) that registers bcd_jax entries"
            ) from None
