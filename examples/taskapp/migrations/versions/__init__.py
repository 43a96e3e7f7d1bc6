"""The task app's revisions."""
