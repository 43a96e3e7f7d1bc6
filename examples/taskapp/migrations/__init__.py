"""The task app's Alembic history."""
