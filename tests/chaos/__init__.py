"""The chaos soak (``make chaos``): not part of ``make test``; see docs/reliability.md."""
