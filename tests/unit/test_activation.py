"""Activations racing (two projects switching, a rollback during a deploy): each project's
route and its active deployment in the lineage store agree at the end."""

from __future__ import annotations

import threading
from pathlib import Path

from mlops_lib.lineage import lineage_store
from mlops_lib.serving import deploy
from mlops_lib.settings import load_settings
from mlops_lib.stack.gateway import read_routes


def test_racing_activations_leave_route_and_lineage_in_agreement(tmp_path: Path) -> None:
    settings = load_settings(stack_dir=tmp_path, lineage_db_url=f"sqlite:///{tmp_path}/l.db")
    store = lineage_store(settings)
    made = {
        project: [
            store.record_deployment(
                project=project,
                bento_tag=f"mlops-{project}:{i}",
                model_version=i,
                port=9000 + i,
                state=deploy.STARTING,
            )
            for i in range(1, 7)
        ]
        for project in ("churn", "fraud")
    }
    start = threading.Barrier(len(made) * 6)

    def activate(dep: dict) -> None:
        start.wait()
        deploy._activate(dep, settings, deploy.RETIRED, "")

    threads = [
        threading.Thread(target=activate, args=(dep,)) for deps in made.values() for dep in deps
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    routes = read_routes(tmp_path)
    for project in made:
        active = store.deployments(project, deploy.ACTIVE)
        assert len(active) == 1, (project, active)
        assert routes[project]["deployment"] == active[0]["id"]
        retired = store.deployments(project, deploy.RETIRED)
        assert len(retired) == 5


def test_a_retried_package_reuses_its_row_and_never_touches_a_live_one(
    tmp_path: Path, monkeypatch
) -> None:
    settings = load_settings(stack_dir=tmp_path, lineage_db_url=f"sqlite:///{tmp_path}/l.db")
    store = lineage_store(settings)
    live = store.record_deployment(
        project="churn",
        bento_tag="b:live",
        model_version=3,
        state=deploy.ACTIVE,
        dag_run_id="run-1",
    )
    monkeypatch.setattr(deploy, "project_spec", lambda *_a, **_k: None)
    monkeypatch.setattr(deploy, "unapproved_reason", lambda *_a, **_k: None)
    monkeypatch.setattr(deploy, "import_model", lambda *_a, **_k: "churn:m")
    monkeypatch.setattr(deploy, "build_bento", lambda *_a, **_k: "mlops-churn:b")
    first = deploy.package("churn", 4, dag_run_id="run-2", settings=settings)
    again = deploy.package("churn", 4, dag_run_id="run-2", settings=settings)  # the retry
    assert again["id"] == first["id"]
    # A cleared deploy run of the live version gets a row of its own; the live one stays.
    rerun = deploy.package("churn", 3, dag_run_id="run-1", settings=settings)
    assert rerun["id"] != live["id"]
    assert store.deployment(live["id"])["state"] == deploy.ACTIVE
    assert len(store.deployments("churn")) == 3
