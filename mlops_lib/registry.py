"""Model registry and promotion gate (MLflow aliases ``challenger`` and ``champion``).

The gate scores challenger and champion on the holdout of the challenger's commit. When that
holdout holds labelled production rows (folded in by continuous training), the two are also
scored on that production slice, and the slice decides: a model that fixes what production
sees can win, one that does not cannot. A challenger must beat the champion by more than
``promotion.min_improvement``: a tie is not promoted. The reason names the rule that decided.
"""

from __future__ import annotations

import json
import logging
from typing import TypedDict

from mlops_lib.datasets import Holdout, holdout
from mlops_lib.layout import REQUEST_ID, repo_name
from mlops_lib.lineage import lineage_store
from mlops_lib.metrics import LOWER_IS_BETTER, holdout_metrics
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec, project_spec
from mlops_lib.spec import Promotion as PromotionPolicy
from mlops_lib.tracking import connect as connect_mlflow

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PROMOTE = "promote"
REJECT = "reject"
AWAIT = "awaiting_approval"
# Metrics of the holdout's labelled production rows are kept as ``production_<metric>``;
# the slice decides only with at least this many rows.
PRODUCTION = "production_"
MIN_PRODUCTION_ROWS = 50


class RegistryError(RuntimeError):
    """A registry operation was refused; the message names the model and version."""


class GateDecision(TypedDict):
    """The gate's decision on a challenger (what the promote task reads)."""

    version: int
    decision: str
    reason: str
    champion_version: int | None
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None


class Promotion(TypedDict):
    """``@champion`` moved (the champion asset's extra)."""

    version: int
    previous: int | None
    model_uri: str


def _client(settings: Settings):
    return connect_mlflow(settings)


def model_version_tags(
    project: str, version: int | str, settings: Settings | None = None
) -> dict[str, str]:
    """Tags of one registered version (lakefs_commit, gate_*, mlops.run_key, ...)."""
    mv = _client(settings or get_settings()).get_model_version(project, str(version))
    return dict(mv.tags or {})


def champion_version(project: str, settings: Settings | None = None) -> int | None:
    """Version behind ``@champion``, or None when there is none yet."""
    from mlflow.exceptions import MlflowException  # heavy: kept out of DAG parsing

    settings = settings or get_settings()
    try:
        return int(_client(settings).get_model_version_by_alias(project, CHAMPION).version)
    except MlflowException as exc:
        # No such model, or no such alias; anything else (MLflow down, refused) is raised.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion_commit(project: str, settings: Settings | None = None) -> str | None:
    """The lakeFS commit the champion was trained on (None without a champion)."""
    settings = settings or get_settings()
    version = champion_version(project, settings)
    if version is None:
        return None
    return model_version_tags(project, version, settings).get("lakefs_commit")


def decide(
    spec: ProjectSpec, challenger: dict[str, float], champion: dict[str, float] | None
) -> tuple[str, str]:
    """Apply the spec's promotion policy; returns (decision, reason naming the rule).

    The training metric decides on the production slice when both were scored on it
    (``production_<metric>``), else on the holdout; guards hold on the holdout.
    """
    metric = spec.training.metric
    if champion is None:
        decision, reason = PROMOTE, "rule no_champion: there is no current champion"
    elif metric not in challenger:
        decision, reason = (
            REJECT,
            (
                f"rule min_improvement: {metric} of the challenger is undefined on the holdout "
                f"(its labels hold a single class): it cannot be compared with the champion"
            ),
        )
    elif metric not in champion:
        decision, reason = (
            PROMOTE,
            (
                f"rule min_improvement: the champion has no {metric} on the holdout; the "
                f"challenger has {challenger[metric]:.4f}"
            ),
        )
    else:
        decision, reason = _compare(spec, challenger, champion)
    if decision == PROMOTE and spec.promotion.manual_approval:
        return AWAIT, reason + "; waiting for `mlops model approve`"
    return decision, reason


def _compare(
    spec: ProjectSpec, challenger: dict[str, float], champion: dict[str, float]
) -> tuple[str, str]:
    """The minimum improvement of the training metric, then every guard."""
    metric, policy = spec.training.metric, spec.promotion
    judged = PRODUCTION + metric
    if judged not in challenger or judged not in champion:
        judged = metric
    where = "on the production slice" if judged != metric else "on the holdout"
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    gain = sign * (challenger[judged] - champion[judged])
    versus = f"{metric} {challenger[judged]:.4f} vs champion {champion[judged]:.4f}"
    problems = []
    # Metrics carry 6 decimals: a gain within float noise of the minimum is not above it.
    if round(gain, 9) <= policy.min_improvement:
        problems.append(
            f"rule min_improvement {where}: {versus}: improvement {gain:+.4f} is not above "
            f"the required {policy.min_improvement:+.4f}"
        )
    problems += _guard_problems(policy, challenger, champion)
    if problems:
        return REJECT, "; ".join(problems)
    return PROMOTE, (
        f"rule min_improvement {where}: {versus} (improvement {gain:+.4f} > "
        f"{policy.min_improvement:+.4f}); guards hold"
    )


def _guard_problems(
    policy: PromotionPolicy, challenger: dict[str, float], champion: dict[str, float]
) -> list[str]:
    problems = []
    for guard, limit in policy.guards.items():
        if guard not in challenger or guard not in champion:
            continue
        gsign = -1.0 if guard in LOWER_IS_BETTER else 1.0
        regression = gsign * (champion[guard] - challenger[guard])
        if round(regression, 9) > limit:
            problems.append(
                f"rule guard {guard}: regressed by {regression:.4f} (limit {limit:.4f}): "
                f"{challenger[guard]:.4f} vs {champion[guard]:.4f}"
            )
    return problems


def model_card(
    spec: ProjectSpec,
    version: int,
    commit: str,
    metrics: dict[str, float],
    decision: str,
    reason: str,
    champion: dict[str, float] | None,
) -> str:
    """Short markdown model card written into the version's description."""
    feats = ", ".join(spec.features + list(spec.training.derived))
    champ = json.dumps(champion) if champion else "none"
    return (
        f"## {spec.name} v{version}\n\n"
        f"**Intended use**: {spec.description.strip() or spec.name} "
        f"({spec.target.task} of `{spec.target.column}`).\n\n"
        f"**Data**: lakeFS `{repo_name(spec.name)}` commit `{commit}`; "
        f"{'time-ordered' if spec.schema.event_time else 'seeded'} holdout of "
        f"{spec.training.holdout_fraction:.0%}.\n\n"
        f"**Features**: {feats}.\n\n"
        f"**Holdout metrics**: {json.dumps(metrics)}; champion at gate time: {champ}.\n\n"
        f"**Gate**: {decision}: {reason}.\n\n"
        f"**Limits**: trained on the data described above only; watch the monitoring DAG for "
        f"drift; a category value unseen in training counts as the rare values do (one-hot) "
        f"or as unknown (ordinal)."
    )


SERVING_HEADING = "**Serving runtime**"


def with_serving_runtime(card: str, runtime: str, reason: str) -> str:
    """The model card with its serving line (replaced on each deployment)."""
    line = f"{SERVING_HEADING}: {runtime}" + (f" ({reason})" if reason else "") + "."
    parts = [p.strip() for p in card.strip().split("\n\n")]
    kept = [p for p in parts if p and not p.startswith(SERVING_HEADING)]
    return "\n\n".join([*kept, line])


def note_serving_runtime(
    project: str, version: int, runtime: str, reason: str, settings: Settings | None = None
) -> None:
    """Record on the model version which runtime serves it (tags and model card)."""
    client = _client(settings or get_settings())
    current = client.get_model_version(project, str(version)).description or ""
    client.set_model_version_tag(project, str(version), "serving_runtime", runtime)
    client.set_model_version_tag(project, str(version), "serving_runtime_reason", reason[:4000])
    client.update_model_version(
        project, str(version), description=with_serving_runtime(current, runtime, reason)
    )


def evaluate_gate(
    project: str, version: int, commit: str, settings: Settings | None = None
) -> GateDecision:
    """Score challenger and champion on the same holdout and decide; records the decision."""
    settings = settings or get_settings()
    spec = project_spec(project, settings)
    challenger, champ_v, champion = _score_on_holdout(spec, version, commit, settings)
    decision, reason = decide(spec, challenger, champion)
    _record_decision(
        spec, version, commit, decision, reason, challenger, champ_v, champion, settings
    )
    log.info(
        "gate for %s v%s on the holdout of lakeFS %s@%s (champion v%s): %s (%s)",
        project,
        version,
        repo_name(project),
        commit[:12],
        champ_v,
        decision,
        reason,
    )
    return {
        "version": version,
        "decision": decision,
        "reason": reason,
        "champion_version": champ_v,
        "challenger_metrics": challenger,
        "champion_metrics": champion,
    }


def _score_on_holdout(
    spec: ProjectSpec, version: int, commit: str, settings: Settings
) -> tuple[dict[str, float], int | None, dict[str, float] | None]:
    """Holdout metrics of the challenger, the champion's version and its metrics (if any)."""
    import mlflow.sklearn  # heavy: kept out of DAG parsing

    project = spec.name
    connect_mlflow(settings)
    held = holdout(spec, commit, settings)
    challenger = gate_metrics(mlflow.sklearn.load_model(f"models:/{project}/{version}"), held, spec)
    champ_v = champion_version(project, settings)
    champion = None
    if champ_v is not None and champ_v != version:
        champion = gate_metrics(
            mlflow.sklearn.load_model(f"models:/{project}/{champ_v}"), held, spec
        )
    return challenger, champ_v, champion


def gate_metrics(model: object, held: Holdout, spec: ProjectSpec) -> dict[str, float]:
    """Holdout metrics, plus ``production_<metric>`` on the holdout's labelled production
    rows when there are enough of them (the most recent ones when the spec has an event
    time: the holdout is the newest part of the data)."""
    task = spec.target.task
    out = holdout_metrics(model, held.X, held.y, spec)
    if REQUEST_ID not in held.rows.columns:
        return out
    production = held.rows[REQUEST_ID].notna().to_numpy()
    rows = int(production.sum())
    if rows < MIN_PRODUCTION_ROWS:
        return out
    y = held.y[production]
    if task == "classification" and y.nunique() < 2:
        log.info("production slice of %d rows has a single class: judged on the holdout", rows)
        return out
    try:
        sliced = holdout_metrics(model, held.X[production], y, spec)
    except ValueError as exc:  # a class the slice lacks: the holdout decides
        log.info("production slice of %d rows not scored (%s): judged on the holdout", rows, exc)
        return out
    out |= {PRODUCTION + k: v for k, v in sliced.items()}
    out[PRODUCTION + "rows"] = float(rows)
    return out


def _record_decision(
    spec: ProjectSpec,
    version: int,
    commit: str,
    decision: str,
    reason: str,
    challenger: dict[str, float],
    champ_v: int | None,
    champion: dict[str, float] | None,
    settings: Settings,
) -> None:
    """The decision as version tags, the model card and a lineage row."""
    project = spec.name
    client = _client(settings)
    tags = {
        "gate_decision": decision,
        "gate_reason": reason[:4000],
        "gate_challenger_metrics": json.dumps(challenger),
        "gate_champion_metrics": json.dumps(champion or {}),
        "gate_champion_version": str(champ_v or ""),
        "gate_data_commit": commit,
    }
    for k, v in tags.items():
        client.set_model_version_tag(project, str(version), k, v)
    client.update_model_version(
        project,
        str(version),
        description=model_card(spec, version, commit, challenger, decision, reason, champion),
    )
    lineage_store(settings).record_decision(
        project=project,
        version=version,
        decision=decision,
        reason=reason,
        champion_version=champ_v,
        challenger_metrics=challenger,
        champion_metrics=champion or {},
    )


APPROVED = "approved"
# Verdicts that let a version serve: the gate's promotion or an operator's approval.
SERVABLE = (PROMOTE, APPROVED)


def unapproved_reason(project: str, version: int, settings: Settings) -> str | None:
    """Why a version may not serve (None when the lineage store records its approval).

    ``@champion`` can be moved by anyone with MLflow access; only a verdict recorded by the
    gate or by ``mlops model approve`` makes a version servable.
    """
    verdicts = [d["decision"] for d in lineage_store(settings).decisions(project, version)]
    if any(v in SERVABLE for v in verdicts):
        return None
    return (
        f"{project} v{version} is @champion but neither the promotion gate nor an operator "
        f"approved it (recorded decisions: {', '.join(verdicts) or 'none'}); the alias was "
        f"moved outside the platform. Train through {project}__train, or approve a held "
        f"version with `mlops model approve {project} VERSION`"
    )


def promote(project: str, version: int, settings: Settings | None = None) -> Promotion:
    """Move ``@champion`` to a version."""
    settings = settings or get_settings()
    client = _client(settings)
    previous = champion_version(project, settings)
    client.set_registered_model_alias(project, CHAMPION, str(version))
    client.set_model_version_tag(project, str(version), "promoted_from", str(previous or ""))
    log.info("%s: @champion moved from %s to version %s", project, previous, version)
    return {"version": version, "previous": previous, "model_uri": f"models:/{project}@{CHAMPION}"}


def approve(project: str, version: int, settings: Settings | None = None) -> Promotion:
    """Operator approval of a version the gate held for approval; promotes it."""
    settings = settings or get_settings()
    client = _client(settings)
    try:
        mv = client.get_model_version(project, str(version))
    except Exception as exc:
        raise RegistryError(f"model {project!r} has no version {version}") from exc
    state = (mv.tags or {}).get("gate_decision")
    if state != AWAIT:
        raise RegistryError(
            f"{project} v{version} is not awaiting approval (gate decision: {state or 'none'})"
        )
    out = promote(project, version, settings)
    client.set_model_version_tag(project, str(version), "gate_decision", APPROVED)
    lineage_store(settings).record_decision(
        project=project,
        version=version,
        decision=APPROVED,
        reason="approved by operator",
        champion_version=out["previous"],
        challenger_metrics={},
        champion_metrics={},
    )
    return out
