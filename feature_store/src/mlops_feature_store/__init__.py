"""The platform's feature store runner (Feast, in its own environment)."""
