"""The model card (``README.md``) of an exported model, from the run's ``summary.json`` and config."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["model_card", "run_overrides"]


def run_overrides(overrides: Sequence[str], config: Mapping[str, Any]) -> list[str]:
    """The command-line overrides of a run: ``.hydra/overrides.yaml`` when Hydra wrote it, else the
    ``hydra.overrides.task`` list of the saved config (runs composed without the Hydra app)."""
    if overrides:
        return list(overrides)
    hydra = config.get("hydra") or {}
    return [str(o) for o in ((hydra.get("overrides") or {}).get("task") or [])]


def _target(node: Any) -> str:
    return str(node.get("_target_", "?")).rsplit(".", 1)[-1] if isinstance(node, Mapping) else "none"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(*, name: str, config: Mapping[str, Any], summary: Mapping[str, Any], overrides: Sequence[str],
               choices: Mapping[str, str], task: str, modalities: Sequence[str], labels: Sequence[str] | None,
               files: Sequence[str], source: str, checkpoint: str) -> str:
    """Markdown describing an exported model: what it is, how it was trained, its metrics, how to use it."""
    model = config.get("model") or {}
    encoders = ", ".join(f"{m}: {_target(node)}" for m, node in (model.get("encoders") or {}).items()
                         if m in modalities)
    lines = [f"# {name}", "",
             f"Exported from the training run `{source}` (checkpoint `{checkpoint}`) by `polyfuse-export`.", "",
             "| | |", "|---|---|", f"| task | {task} |", f"| modalities | {', '.join(modalities)} |",
             f"| encoders | {encoders or '?'} |", f"| fusion | {_target(model.get('fusion'))} |",
             f"| head | {_target(model.get('head'))} |"]
    if summary.get("num_parameters"):
        lines.append(f"| parameters | {summary['num_parameters']:,} |")
    if labels:
        lines.append(f"| classes | {', '.join(labels)} |")
    lines += ["", "## Training", "", "```bash", " ".join(["polyfuse-train", *overrides]), "```", ""]
    if choices:
        lines += ["Config choices: " + ", ".join(f"`{k}={v}`" for k, v in sorted(choices.items())) + ".", ""]
    lines.append(f"Seed {config.get('seed', '?')}; {summary.get('epochs', '?')} epochs, "
                 f"{summary.get('global_step', '?')} steps, fit in {summary.get('fit_seconds', '?')} s.")
    lines += ["", "## Metrics", ""]
    test = summary.get("test") or {}
    if summary.get("monitor"):
        lines.append(f"Best `{summary['monitor']}` (selects the checkpoint): {_number(summary.get('best_score'))}.")
        lines.append("")
    if test:
        lines += ["| metric | value |", "|---|---|", *(f"| {k} | {_number(v)} |" for k, v in sorted(test.items()))]
    else:
        lines.append("The run recorded no test metrics.")
    example = ", ".join(f'{m}="..."' for m in modalities)
    lines += ["", "## Use", "", "```python", "import polyfuse", "",
              'model = polyfuse.load("path/to/this/folder")', f"prediction = model.predict({example})", "```", "",
              "Any subset of the modalities may be given (the others are passed as absent), one sample or lists.",
              "", "## Files", "", *(f"- `{f}`" for f in files), ""]
    return "\n".join(lines)
