-- Databases of the platform's services (the user and its password come from the environment).
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE mlops;
