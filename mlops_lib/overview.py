"""What the MLOps page shows: per project, its models, data, drift, deployments, last
failure and feature views.

One read-only function per view, from the registry (MLflow aliases), the lineage store,
lakeFS and the feature store; the Airflow UI plugin renders it and links into MLflow,
lakeFS, Airflow and the service.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from mlops_lib import versioning as vc
from mlops_lib.feature_store import server as feature_server
from mlops_lib.feature_store import store as feature_store
from mlops_lib.layout import repo_name
from mlops_lib.lineage import LastFailure, LineageStore, lineage_store
from mlops_lib.registry import CHALLENGER, CHAMPION, _client
from mlops_lib.settings import Settings, get_settings
from mlops_lib.spec import ProjectSpec, discover, project_spec


def links(settings: Settings, project: str) -> dict[str, str]:
    """UI addresses of a project in MLflow, lakeFS, Airflow and the service."""
    return {
        "mlflow_model": f"{settings.mlflow_url}/#/models/{quote(project)}",
        "lakefs_repo": f"{settings.lakefs_url}/repositories/{repo_name(project)}/objects?ref=main",
        "airflow_dags": f"{settings.airflow_base_url}/dags?tags=project%3A{quote(project)}",
        "service": f"{settings.serving_base_url}/{project}/docs",
    }


def version_link(settings: Settings, project: str, version: int | str) -> str:
    return f"{settings.mlflow_url}/#/models/{quote(project)}/versions/{version}"


def commit_link(settings: Settings, project: str, commit: str) -> str:
    return f"{settings.lakefs_url}/repositories/{repo_name(project)}/commits/{commit}"


def dag_link(settings: Settings, dag_id: str) -> str:
    """The Airflow UI page of one DAG."""
    return f"{settings.airflow_base_url}/dags/{quote(dag_id)}"


def dag_run_link(settings: Settings, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of one DAG run."""
    return f"{settings.airflow_base_url}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


class FailureView(LastFailure):
    """A project's last failure as the page shows it, with its DAG run's page in Airflow."""

    dag_run_url: str


def last_failure(store: LineageStore, project: str, settings: Settings) -> FailureView | None:
    """The project's newest final task failure, ``resolved`` once a later success of its
    stage was recorded (the rule is the lineage store's)."""
    found = store.last_failure(project)
    if found is None:
        return None
    url = dag_run_link(settings, found["dag_id"], found["dag_run_id"])
    return FailureView(**found, dag_run_url=url)


def _alias_versions(project: str, settings: Settings) -> dict[str, dict[str, Any]]:
    """champion and challenger versions with their data commit and gate verdict."""
    client = _client(settings)
    out: dict[str, dict[str, Any]] = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            mv = client.get_model_version_by_alias(project, alias)
        except Exception:  # no such alias (or model) yet
            continue
        tags = mv.tags or {}
        out[alias] = {
            "version": int(mv.version),
            "data_commit": tags.get("lakefs_commit", ""),
            "gate": tags.get("gate_decision", ""),
            "gate_reason": tags.get("gate_reason", ""),
            "drift_report_id": tags.get("drift_report_id", ""),
        }
    return out


def feature_views(
    project: str, settings: Settings, spec: ProjectSpec | None = None
) -> dict[str, Any] | None:
    """The project's feature views as the page shows them: each view's features and TTL
    from the spec, the commit the online store was last materialized from and how fresh it
    is, the registry hash and the feature server's state. None without ``features:``;
    ``published`` None while the ``<project>__features`` DAG has not published a commit."""
    spec = spec or project_spec(project, settings)
    if spec.feature_store is None:
        return None
    current = feature_store.published(project, settings)
    views = [
        {
            "name": name,
            "description": view.description,
            "ttl_days": view.ttl_days,
            "features": [
                {
                    "name": fname,
                    "aggregate": f.aggregate,
                    "column": f.column,
                    "days": f.days,
                    "where": dict(f.where),
                }
                for fname, f in view.features.items()
            ],
            "published": current is not None and name in current["feature_views"],
        }
        for name, view in spec.feature_store.views.items()
    ]
    out: dict[str, Any] = {"dag_id": f"{project}__features", "views": views, "published": None}
    if current is None:
        return out
    materialized_to = current["materialized_to"]
    out["published"] = {
        "commit_id": current["commit_id"],
        "registry_hash": current["registry_hash"],
        "materialized_to": materialized_to,
        "age_seconds": _age_seconds(materialized_to),
        "server_url": current["server_url"],
        "server_healthy": feature_server.healthy(settings, project),
    }
    return out


def _age_seconds(iso: str) -> float:
    """Seconds from an ISO time (UTC when it names no zone) to now."""
    at = datetime.fromisoformat(iso)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - at).total_seconds()


def _feature_views_or_error(
    project: str, settings: Settings, spec: ProjectSpec | None
) -> dict[str, Any] | None:
    try:
        return feature_views(project, settings, spec)
    except Exception as exc:  # the page stays up; the section says what could not be read
        return {"error": f"{type(exc).__name__}: {exc}"}


def project_overview(
    project: str, settings: Settings | None = None, spec: ProjectSpec | None = None
) -> dict[str, Any]:
    """Everything the page shows about one project (JSON-ready). ``spec``: the project's,
    when the caller has it (read from the projects folder otherwise)."""
    settings = settings or get_settings()
    store = lineage_store(settings)
    reports = store.drift_reports(project, limit=5)
    chain = store.chain(project)[:6]
    return {
        "project": project,
        "links": links(settings, project),
        "models": _alias_versions(project, settings),
        "lineage": [
            {
                "version": link["model_version"]["version"],
                "data_commit": link["dataset"].get("commit_id", ""),
                "rows": link["dataset"].get("rows"),
                "training_run": (link["training"] or {}).get("mlflow_run_id", ""),
                "family": (link["training"] or {}).get("best_family", ""),
                "holdout": link["model_version"].get("holdout_metrics", {}),
                "decisions": [f"{d['decision']}: {d['reason']}" for d in link["decisions"]],
            }
            for link in chain
        ],
        "drift_reports": reports,
        "deployments": store.deployments(project, limit=5),
        "last_failure": last_failure(store, project, settings),
        "features": _feature_views_or_error(project, settings, spec),
    }


def overview(settings: Settings | None = None) -> list[dict[str, Any]]:
    """The overview of every valid project spec, in name order."""
    settings = settings or get_settings()
    specs, _ = discover(settings.projects_dir)
    return [project_overview(name, settings, specs[name]) for name in sorted(specs)]


# HTML -------------------------------------------------------------------------------------
def _a(href: str, text: str) -> str:
    return f'<a href="{escape(href)}" target="_blank" rel="noopener">{escape(text)}</a>'


def _short(commit: str) -> str:
    return commit[:12] if commit else "-"


def render_failure(f: FailureView | None) -> str:
    """The last failure in one line: red while open, grey once resolved; nothing without."""
    if not f:
        return ""
    run = _a(f["dag_run_url"], f"{f['dag_id']} run {f['dag_run_id']}")
    state = "resolved" if f["resolved"] else "open"
    note = " (resolved: the stage succeeded since)" if f["resolved"] else ""
    return (
        f'<p class="failure {state}">last failure: {escape(f["stage"])} ({run}, task '
        f"{escape(f['task_id'])}): {escape(f['cause'])} · {escape(str(f['failed_at'])[:19])}"
        f"{note}</p>"
    )


def _ago(seconds: float) -> str:
    """An age in the largest unit that keeps it at least 2: ``90 s``, ``5 min``, ``3 h``."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{max(int(seconds), 0)} s ago"


def _feature_text(f: dict[str, Any]) -> str:
    """One feature as its spec says it: ``tickets_30d: count over 30 days where kind=ticket``."""
    what = f["aggregate"] + (f" of {f['column']}" if f["column"] else "")
    window = f" over {f['days']} days" if f["days"] else ""
    where = " and ".join(f"{k}={v}" for k, v in f["where"].items())
    return f"{f['name']}: {what}{window}" + (f" where {where}" if where else "")


def render_features(fs: dict[str, Any] | None, settings: Settings, project: str) -> str:
    """The feature views section: per view its features, TTL, the commit it was computed
    from, freshness and registry hash, then the feature server; nothing without views."""
    if not fs:
        return ""
    if "error" in fs:
        return (
            "<h3>Feature views</h3>"
            f'<p class="error">feature store not readable: {escape(fs["error"][:200])}</p>'
        )
    pub = fs["published"]
    rows = []
    for v in fs["views"]:
        features = "<br>".join(escape(_feature_text(f)) for f in v["features"])
        if pub and v["published"]:
            commit = pub["commit_id"]
            computed = (
                f"<td>{_a(commit_link(settings, project, commit), _short(commit))}</td>"
                f"<td>{_ago(pub['age_seconds'])} ({escape(str(pub['materialized_to'])[:19])})"
                f"</td><td>{escape(pub['registry_hash'])}</td>"
            )
        else:
            computed = "<td colspan=3>not computed yet</td>"
        rows.append(
            f"<tr><td>{escape(v['name'])}</td><td>{features}</td>"
            f"<td>{v['ttl_days']:g} days</td>{computed}</tr>"
        )
    run = _a(dag_link(settings, fs["dag_id"]), fs["dag_id"])
    if pub:
        state = "healthy" if pub["server_healthy"] else "down"
        url = pub["server_url"]
        status = (
            f'<p class="server {state}">feature server: {state} · '
            f"{_a(url, url) if url else '-'}</p>"
        )
        if not all(v["published"] for v in fs["views"]):
            status += f"<p>Views not computed yet: run {run}.</p>"
    else:
        status = f"<p>Feature views not computed yet: run {run}.</p>"
    columns = ("view", "features", "TTL", "computed from", "fresh", "registry")
    head = "".join(f"<th>{h}</th>" for h in columns)
    return f"<h3>Feature views</h3><table><tr>{head}</tr>{''.join(rows)}</table>{status}"


def render_project(p: dict[str, Any], settings: Settings, report_href: str) -> str:
    """One project's section. ``report_href``: format string of a drift report's page."""
    name = p["project"]
    models = []
    for alias in ("champion", "challenger"):
        m = p["models"].get(alias)
        if not m:
            models.append(f"<tr><td>{alias}</td><td colspan=4>none</td></tr>")
            continue
        commit = m["data_commit"]
        models.append(
            f"<tr><td>{alias}</td>"
            f"<td>{_a(version_link(settings, name, m['version']), 'v' + str(m['version']))}</td>"
            f"<td>{_a(commit_link(settings, name, commit), _short(commit)) if commit else '-'}</td>"
            f"<td>{escape(m['gate'] or '-')}</td>"
            f"<td>{escape('drift report ' + m['drift_report_id'] if m['drift_report_id'] else '')}"
            "</td></tr>"
        )
    reports = []
    for r in p["drift_reports"]:
        live = f"{r['live_metric']:.4f}" if r.get("live_metric") is not None else "-"
        reports.append(
            f"<tr class='{'fired' if r['fired'] else 'quiet'}'><td>"
            f"{_a(report_href.format(project=name, id=r['id']), '#' + str(r['id']))}</td>"
            f"<td>v{r['model_version']}</td><td>{r['rows']}</td>"
            f"<td>{'FIRED' if r['fired'] else 'quiet'}</td>"
            f"<td>{escape(', '.join(r['drifted_features']) or '-')}</td><td>{live}</td>"
            f"<td>{escape(r['handled_by'] or '-')}</td><td>{escape(r.get('outcome') or '-')}</td>"
            f"<td>{str(r['created_at'])[:19]}</td></tr>"
        )
    lineage = []
    for link in p["lineage"]:
        holdout = ", ".join(f"{k} {v:.3f}" for k, v in list(link["holdout"].items())[:3])
        commit, v = link["data_commit"], link["version"]
        lineage.append(
            f"<tr><td>{_a(version_link(settings, name, v), f'v{v}')}</td>"
            f"<td>{_a(commit_link(settings, name, commit), _short(commit))}</td>"
            f"<td>{link['rows'] or '-'}</td><td>{escape(link['family'] or '-')}</td>"
            f"<td>{escape(holdout)}</td><td>{escape('; '.join(link['decisions']) or '-')}</td></tr>"
        )
    deployments = [
        f"<tr><td>#{d['id']}</td><td>v{d['model_version']}</td><td>{escape(d['state'])}</td>"
        f"<td>{escape(d['bento_tag'])}</td><td>{escape(d['reason'][:120] or '-')}</td>"
        f"<td>{str(d['created_at'])[:19]}</td></tr>"
        for d in p["deployments"]
    ]
    latest = p["drift_reports"][0] if p["drift_reports"] else None
    chart = (
        f'<iframe class="report" title="latest drift report of {escape(name)}" '
        f'src="{escape(report_href.format(project=name, id=latest["id"]))}"></iframe>'
        if latest
        else "<p>No drift report yet.</p>"
    )
    ln = p["links"]
    features = render_features(p.get("features"), settings, name)

    def table(head: str, rows: list[str]) -> str:
        cols = "".join(f"<th>{h}</th>" for h in head.split("|"))
        body = "".join(rows) or f"<tr><td colspan={len(head.split('|'))}>none</td></tr>"
        return f"<table><tr>{cols}</tr>{body}</table>"

    return f"""<section id="project-{escape(name)}">
<h2>{escape(name)}</h2>
<p class="links">{_a(ln["mlflow_model"], "MLflow model")} · {_a(ln["lakefs_repo"], "lakeFS data")}
 · {_a(ln["airflow_dags"], "Airflow DAGs")} · {_a(ln["service"], "served endpoint")}</p>
{render_failure(p.get("last_failure"))}
<h3>Models</h3>{table("alias|version|data commit|gate|trained because of", models)}
<h3>Drift reports</h3>
{table("report|model|rows|policy|drifted features|live metric|retraining|outcome|created", reports)}
<details open><summary>Latest drift report</summary>{chart}</details>
<h3>Lineage</h3>{table("version|data commit|batch rows|family|holdout|gate", lineage)}
<h3>Deployments</h3>{table("deployment|version|state|bento|reason|created", deployments)}{features}
</section>"""


def render_page(projects: list[dict[str, Any]], settings: Settings, report_href: str) -> str:
    """The whole MLOps page."""
    sections = "".join(render_project(p, settings, report_href) for p in projects)
    nav = " ".join(
        f'<a href="#project-{escape(p["project"])}">{escape(p["project"])}</a>' for p in projects
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>MLOps</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#1a202c}}
table{{border-collapse:collapse;margin:.3em 0 1em}}
td,th{{border-bottom:1px solid #e2e8f0;padding:4px 10px;text-align:left;font-size:14px}}
th{{background:#f7fafc}} tr.fired td:nth-child(4){{color:#c53030;font-weight:bold}}
iframe.report{{width:100%;height:520px;border:1px solid #e2e8f0}}
section{{margin-bottom:2.5em}} .links a{{margin-right:.3em}}
.failure{{color:#c53030;font-weight:600}} .failure.resolved{{color:#718096;font-weight:normal}}
.error,.server.down{{color:#c53030}} .server.healthy{{color:#2f855a}}
</style></head><body>
<h1>MLOps</h1><p>Projects: {nav or "none"}</p>
{sections or "<p>No valid project specs.</p>"}
</body></html>
"""


def drift_report_html(project: str, report_id: int, settings: Settings | None = None) -> str:
    """The stored HTML page of one drift report (from lakeFS)."""
    settings = settings or get_settings()
    row = lineage_store(settings).drift_report(report_id)
    if row is None or row["project"] != project:
        raise KeyError(f"{project} has no drift report {report_id}")
    uri = row["lakefs_uri"]  # lakefs://<repo>/<commit>/<path>
    if not uri:
        raise KeyError(f"drift report {report_id} of {project} has no page stored in lakeFS")
    _, _, rest = uri.partition("lakefs://")
    _repo, ref, path = rest.split("/", 2)
    return vc.read(project, ref, path, settings).decode()
