"""The feature store: Feast feature views computed from versioned event tables."""
