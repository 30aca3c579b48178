"""The MLflow side: tracking runs, registered versions with their provenance and aliases."""
