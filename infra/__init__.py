"""Deployment support: the local stack (`make up` / `make down`) and the steps `prefect deploy` runs."""
