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
