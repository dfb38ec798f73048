"""MLOps platform library: all real logic of the platform, free of Airflow imports."""

__version__ = "0.1.0"
