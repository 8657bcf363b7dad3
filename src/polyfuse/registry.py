"""One name -> builder registry, shared by encoders, fusions and heads (as timm's ``@register_model``).

>>> FUSIONS = Registry("fusion")
>>> @FUSIONS.register("concat")
... class ConcatFusion(Fusion): ...
>>> FUSIONS.build("concat", dims={"image": 64, "text": 32}, out_dim=128)
>>> FUSIONS.available()   # sorted names; an unknown name's KeyError lists them

An entry is a class or a builder function (``encoder_from_hf``); :meth:`Registry.register` works as a
class / function decorator or as a plain call beside the import (``ENCODERS.register("vit")(ViTEncoder)``).
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

__all__ = ["Registry"]

BuilderT = TypeVar("BuilderT", bound=Callable[..., Any])


class Registry(Generic[BuilderT]):
    """Named builders of one kind of part (``"encoder"``, ``"fusion"``, ``"head"``).

    Args:
        kind: what the entries build; used in error messages (``unknown head 'vqa2'; available: ...``).
        tag: attribute set on a registered class to the name it is registered under (``None``: none).
    """

    def __init__(self, kind: str, tag: str | None = "registry_name") -> None:
        self.kind, self.tag = kind, tag
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[BuilderT], BuilderT]:
        """Decorator registering a class or builder function as ``name``; a second, different entry
        under the same name is an error (the same one again is not: re-imports are harmless)."""
        def wrap(builder: BuilderT) -> BuilderT:
            known = self._entries.get(name)
            if known is not None and known is not builder:
                raise ValueError(f"{self.kind} {name!r} is already registered by {_name(known)}")
            self._entries[name] = builder
            if self.tag is not None and isinstance(builder, type):
                setattr(builder, self.tag, name)
            return builder
        return wrap

    def available(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        """The class or builder registered as ``name``; a KeyError listing the valid names otherwise."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}")
        return self._entries[name]

    def build(self, name: str, *args: Any, **options: Any) -> Any:
        """Call the entry registered as ``name`` with ``args`` and ``options``."""
        return self.get(name)(*args, **options)

    def name_of(self, builder: Callable[..., Any]) -> str | None:
        """The name ``builder`` is registered under, ``None`` if it is not."""
        return next((name for name, entry in self._entries.items() if entry is builder), None)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.available()})"


def _name(builder: Callable[..., Any]) -> str:
    return getattr(builder, "__name__", repr(builder))
