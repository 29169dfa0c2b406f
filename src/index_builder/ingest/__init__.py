"""The standalone ingestion job."""
