"""Check the numeric fields of a composed config before any work starts, naming the key.

Without this, ``model.optimizer.lr=abc`` fails deep inside ``torch.optim`` once training starts
(``TypeError: '<=' not supported between instances of 'float' and 'str'``, no key named). The
configs stay plain YAML (no structured-config schema): :data:`RULES` maps key-path patterns
(``fnmatch`` over dotted paths; list item ``i`` is matched as ``.i``) to the type and range a value must have,
and :func:`validate_config` checks every key of the composed config a rule matches. ``null``
values and keys a config does not have are left alone; ``???`` values are reported by the code
that needs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig

from polyfuse.errors import ConfigValueError

__all__ = ["Rule", "RULES", "check_value", "config_problems", "validate_config"]


@dataclass(frozen=True)
class Rule:
    """Keys matching ``pattern`` hold an ``int`` (``integer``) or any real number, in
    ``[low, high]`` (``low_open`` / ``high_open``: the bound itself is excluded); ``example`` is a
    valid value shown in the error."""

    pattern: str
    integer: bool = False
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    example: str = ""

    def expected(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low == -math.inf and self.high == math.inf:
            return kind
        if self.high == math.inf:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.low == -math.inf:
            return f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


PROBABILITY: dict[str, Any] = dict(low=0.0, high=1.0, example="0.1")
RULES: tuple[Rule, ...] = (
    # optimizer
    Rule("*.lr", low=0.0, low_open=True, example="1e-3"),
    Rule("*.weight_decay", low=0.0, example="0.01"),
    Rule("*.betas.*", low=0.0, high=1.0, high_open=True, example="0.9"),
    Rule("*.momentum", **PROBABILITY),
    Rule("*.warmup_steps", integer=True, low=0),
    # data
    Rule("*batch_size", integer=True, low=1),
    Rule("*num_workers", integer=True, low=0),
    Rule("*.missing.*", **PROBABILITY),           # data.missing={audio: 0.5}
    Rule("*.missing_train.*", **PROBABILITY),
    # regularisation
    Rule("*dropout", **PROBABILITY),              # dropout, attn_dropout, ...
    Rule("*modality_dropout.p", **PROBABILITY),
    Rule("*modality_dropout.p.*", **PROBABILITY),
    Rule("*.mask_prob", **PROBABILITY),
    Rule("*.label_smoothing", **PROBABILITY),
    # trainer
    Rule("trainer.max_epochs", integer=True, low=-1),
    Rule("trainer.min_epochs", integer=True, low=0),
    Rule("trainer.max_steps", integer=True, low=-1),
    Rule("trainer.accumulate_grad_batches", integer=True, low=1),
    Rule("trainer.log_every_n_steps", integer=True, low=1),
    Rule("trainer.gradient_clip_val", low=0.0),
    Rule("checkpoint_every_n_steps", integer=True, low=0),
    Rule("callbacks.*.every_n_batches", integer=True, low=1),
    # polyfuse-eval robustness levels
    Rule("robustness.rates.*", **PROBABILITY),
    Rule("robustness.severities.*", **PROBABILITY),
)


def check_value(key: str, value: Any, rule: Rule) -> str | None:
    """A message if ``value`` (at ``key``) breaks ``rule``, else None."""
    number_types = (int,) if rule.integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, number_types) or (
            isinstance(value, float) and math.isnan(value)):
        shown = f"{value!r} ({type(value).__name__})"
        return f"{key}={shown}: expected {rule.expected()}{_example(key, rule)}"
    below = value <= rule.low if rule.low_open else value < rule.low
    above = value >= rule.high if rule.high_open else value > rule.high
    if below or above:
        return f"{key}={value!r}: expected {rule.expected()}{_example(key, rule)}"
    return None


def _example(key: str, rule: Rule) -> str:
    if rule.example:
        return f", e.g. {key}={rule.example}"
    if rule.integer and math.isfinite(rule.low):
        return f", e.g. {key}={max(int(rule.low) + int(rule.low_open), 1)}"
    return ""


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every scalar leaf, interpolations resolved; unresolvable or
    ``???`` values are skipped."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            try:
                value = node[key]
            except Exception:  # `???`, or an interpolation only Hydra's runtime can resolve
                continue
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            try:
                value = node[index]
            except Exception:
                continue
            yield from _leaves(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


def config_problems(cfg: DictConfig, rules: tuple[Rule, ...] = RULES) -> list[str]:
    """One message per value of ``cfg`` that breaks the first rule matching its key (``hydra`` skipped)."""
    problems = []
    for key, value in _leaves(cfg):
        if key.startswith("hydra.") or value is None:
            continue
        dotted = key.replace("[", ".").replace("]", "")  # betas[0] -> betas.0
        rule = next((rule for rule in rules if fnmatchcase(dotted, rule.pattern)), None)
        if rule is not None and (problem := check_value(key, value, rule)) is not None:
            problems.append(problem)
    return problems


def validate_config(cfg: DictConfig, rules: tuple[Rule, ...] = RULES) -> None:
    """Raise :class:`~polyfuse.errors.ConfigValueError` listing every value that breaks a rule."""
    problems = config_problems(cfg, rules)
    if len(problems) == 1:
        raise ConfigValueError(problems[0])
    if problems:
        raise ConfigValueError("invalid config values:\n  " + "\n  ".join(problems))
