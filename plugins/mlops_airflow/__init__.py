"""Airflow pieces of the platform: sensors (and, later, operators, hooks and the UI)."""
