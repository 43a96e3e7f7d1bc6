"""Example host applications that use the reminder service from their own code."""
