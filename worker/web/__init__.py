"""``reminders serve``: the small HTTP app behind a reminder's unsubscribe and snooze links."""
