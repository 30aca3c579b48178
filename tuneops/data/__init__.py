"""Company data: storage (local or S3), rows and fingerprints, the split, the data contracts' runner, PII."""
