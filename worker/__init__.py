"""Due-date reminders for a task-management application."""
