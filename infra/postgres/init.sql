-- Second database on the shared PostgreSQL: Prefect uses `prefect` (POSTGRES_DB), MLflow uses `mlflow`.
CREATE DATABASE mlflow;
