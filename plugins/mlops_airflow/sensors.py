"""Sensors of the platform, thin wrappers over ``mlops_lib`` in Airflow's provider style."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue


class DriftPolicySensor(BaseSensorOperator):
    """Succeeds when a project's drift policy has fired and a retraining is due.

    Due means: a drift report whose verdict fired (at least ``min_drifted_features``
    drifted features, or prediction drift above the limit) that is not part of the episode
    of the last retraining (the spec's ``monitoring.cooldown_minutes``). Pushes the report
    (id, drifted features, reason) as its XCom value. Reschedule mode by default, so a
    waiting sensor holds no worker slot; with ``soft_fail`` a run with nothing to do ends
    skipped rather than failed; a fired report inside the cooldown (the same episode) skips
    at once.

    :param project: project whose drift reports are watched (templated).
    """

    template_fields = ("project",)
    ui_color = "#f0c27b"

    def __init__(
        self,
        *,
        project: str,
        mode: str = "reschedule",
        poke_interval: float = 20.0,
        timeout: float = 60.0,
        soft_fail: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            mode=mode,
            poke_interval=timedelta(seconds=poke_interval),
            timeout=timedelta(seconds=timeout),
            soft_fail=soft_fail,
            **kwargs,
        )
        self.project = project

    def poke(self, context: Any) -> PokeReturnValue | bool:
        from airflow.sdk.exceptions import AirflowSkipException

        from mlops_lib.continuous_training import SAME_EPISODE, DriftToActOn, drift_to_act_on

        report, why = drift_to_act_on(self.project)
        if report is None and SAME_EPISODE in why:
            # Definitive: the episode already has its retraining; waiting changes nothing.
            raise AirflowSkipException(f"{self.project}: no retraining due: {why}")
        if report is None:
            self.log.info("%s: no retraining due: %s", self.project, why)
            return False
        self.log.info("%s: retraining due: %s", self.project, why)
        found: DriftToActOn = {
            "report_id": report["id"],
            "drifted_features": report["drifted_features"],
            "reason": report["reason"],
            "model_version": report["model_version"],
        }
        return PokeReturnValue(is_done=True, xcom_value=found)
