"""Serving: request schemas generated from project specs (used by the BentoML services)."""
