"""A transactional outbox: rows written in the caller's transaction, relayed with retries.

This package knows nothing about the messages' meaning; what it needs from the domain
(re-checking a row before it is sent, rendering the message) it receives as functions.
"""
