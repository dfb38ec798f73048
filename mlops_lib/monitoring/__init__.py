"""Monitoring: served traffic compared with what each model version was trained on.

* :mod:`~mlops_lib.monitoring.reference`: a version's reference profile (its holdout as
  served rows look: features, prediction, score);
* :mod:`~mlops_lib.monitoring.windows`: hour windows of the prediction log, profiled once;
* :mod:`~mlops_lib.monitoring.drift`: per-column drift tests, the report's content and the
  drift policy (pure);
* :mod:`~mlops_lib.monitoring.report`: the monitor run that stores the report in lakeFS,
  MLflow and the lineage store.

What a drift report leads to (a retraining) is :mod:`mlops_lib.continuous_training`'s room.
"""
