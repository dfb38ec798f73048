"""Platform check: proves the scheduler can reach lakeFS and MLflow with the platform's settings."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from mlops_airflow.notifiers import MLOpsFailureNotifier

DOC = """
### platform_check

Runs on demand. Each task calls one `mlops_lib.platform_check` function:

* `check_lakefs` ensures the `platform-check` repository exists and returns the head
  commit id of its `main` branch;
* `check_mlflow` ensures the `platform-check` experiment exists and returns its id.

**When it fails:** run `mlops stack status` and read the log of the service the failed task
names; `mlops stack up` restarts a stopped service with its data intact. A failure is also
posted to the `mlops_alerts` webhook connection when it is configured.
"""


@dag(
    dag_id="platform_check",
    schedule=None,
    catchup=False,
    tags=["platform"],
    doc_md=DOC,
    default_args={
        "owner": "platform",
        "on_failure_callback": MLOpsFailureNotifier(project="platform"),
        "retries": 2,
        "retry_delay": timedelta(seconds=5),
        "retry_exponential_backoff": True,
    },
)
def platform_check():
    @task
    def check_lakefs() -> str:
        from mlops_lib.platform_check import check_lakefs as run

        return run()

    @task
    def check_mlflow() -> str:
        from mlops_lib.platform_check import check_mlflow as run

        return run()

    check_lakefs() >> check_mlflow()


platform_check()
