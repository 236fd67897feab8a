"""One decorator registry for every plugin kind (models, datasets, schedules).

Modelled on timm's ``register_model``: a builder (function or class) is
registered under a canonical name and optional aliases, then built by name::

    @MODELS.register("vit_b16", aliases=("vit_base_imagenet",))
    def vit_b16(**kwargs): ...

    model = MODELS.build("vit_b16", num_classes=10)
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable


class UnknownNameError(KeyError):
    """Raised by :meth:`Registry.get` / :meth:`Registry.build` for a name that
    is not registered. ``str(err)`` is one line naming the registry kind, the
    close matches and every known name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry:
    """A name -> builder table for one plugin kind.

    Args:
        kind: what the registry holds, used in error messages ("model").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, aliases: Iterable[str] = ()) -> Callable:
        """Decorator registering a builder under ``name`` and ``aliases``.

        Raises:
            ValueError: if ``name`` or an alias is already taken (at import time).
        """

        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            for key in (name, *aliases):
                if key in self:
                    raise ValueError(
                        f"{self.kind} name {key!r} is already registered "
                        f"(by {self.get(key).__qualname__}); choose another name"
                    )
            self._builders[name] = builder
            for alias in aliases:
                self._aliases[alias] = name
            return builder

        return decorator

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` (itself or the name an alias points to)."""
        self.get(name)
        return self._aliases.get(name, name)

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name`` (canonical or alias).

        Raises:
            UnknownNameError: if ``name`` is not registered.
        """
        key = self._aliases.get(name, name)
        if key not in self._builders:
            known = self.names()
            close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}: {hint}known {self.kind}s: {', '.join(known)}"
            )
        return self._builders[key]

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the builder registered as ``name`` with ``kwargs``.

        Raises:
            UnknownNameError: if ``name`` is not registered.
        """
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Every canonical name and alias, sorted."""
        return sorted([*self._builders, *self._aliases])

    def canonical_names(self) -> list[str]:
        """Canonical names only, sorted (no aliases)."""
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders or name in self._aliases

    def __len__(self) -> int:
        return len(self._builders)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.canonical_names()})"


MODELS = Registry("model")
DATASETS = Registry("dataset")
SCHEDULES = Registry("schedule")
