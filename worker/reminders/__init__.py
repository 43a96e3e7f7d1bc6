"""The reminder domain: who is due, the scan that queues their reminders, and the message."""
